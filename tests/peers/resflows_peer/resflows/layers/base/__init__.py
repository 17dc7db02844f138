from .activations import *
from .lipschitz import *
from .mixed_lipschitz import *
