"""The family's training forms: how one member trains the inner max. A
string names one with its defaults (`form="multistep"`); `get` resolves
shorthands and configs; a new member subclasses `Form`."""

from keras_gradreg.src.family.forms import *  # noqa: F403
from keras_gradreg.src.family.forms import __all__  # noqa: F401
