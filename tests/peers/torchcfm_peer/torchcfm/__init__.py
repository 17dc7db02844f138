# Test-only peer package (see ../README.md): upstream's __init__ also imports its version module, not copied here.
from .conditional_flow_matching import *  # noqa: F401,F403
