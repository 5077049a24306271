"""plasticnet: recurrent networks whose synapses keep learning inside every episode.

Hebbian and gradient-based plasticity in RNN and LSTM cells (Duan et al.,
ICLR 2023) and Miconi's backprop-trained Hebbian plasticity (2016) family.
"SPEC §N" in the docstrings is section N of ``docs/spec.md``, the science
the code implements.
"""

from .cells import PlasticLSTMCell, PlasticRNNCell
from .layers import FastWeights, PlasticLinear
from .network import PlasticRNN, PlasticState, matched_hidden_size

__all__ = [
    "FastWeights",
    "PlasticLinear",
    "PlasticLSTMCell",
    "PlasticRNN",
    "PlasticRNNCell",
    "PlasticState",
    "matched_hidden_size",
]

__version__ = "0.1.0"
