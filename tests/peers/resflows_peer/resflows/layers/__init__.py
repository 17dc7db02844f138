from .act_norm import *
from .container import *
from .coupling import *
from .elemwise import *
from .iresblock import *
from .normalization import *
from .squeeze import *
from .glow import *
