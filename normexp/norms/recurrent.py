"""The norms of the LSTM cells (input kind "recurrent"), registered with the other norms.

A cell normalizes the gate pre-activations W_x x_t and W_h h_{t-1} and the cell state c_t
(``normexp.models.lstm_cells`` says how); the cell fixes where it normalizes, so the config's
``norm.position`` is checked but unused by LSTM models. Registered in the order experiments and
error lines list the cells: the plain LSTM, LN-LSTM, the two BN-LSTMs, RMSNorm.
"""

from normexp.norms import layers  # noqa: F401  (none, layer and rms registered first)
from normexp.norms.registry import EPS as EPS_RULE
from normexp.norms.registry import MOMENTUM as MOMENTUM_RULE
from normexp.norms.registry import CellNorm, register_cell
from normexp.rules import Num

EPS = 1e-5  # every cell's eps (the rms layer's own default, 1e-6, is not used here)
BN_GAMMA_INIT = 0.1  # Cooijmans et al. 2016, section 4: keeps tanh / sigmoid unsaturated
BN_MOMENTUM = 0.1  # population statistics: running average over training windows

_BN = {"eps": EPS, "momentum": BN_MOMENTUM, "gamma_init": BN_GAMMA_INIT}
_BN_RULES = {"eps": EPS_RULE, "momentum": MOMENTUM_RULE, "gamma_init": Num(0, lo_open=True)}

register_cell("none", CellNorm("none"))
register_cell("layer", CellNorm("layer", {"eps": EPS}))  # Ba et al. 2016, LN-LSTM
# Cooijmans et al. 2016, BN-LSTM: statistics kept per time step.
# BN's colour: the BN-LSTM of the literature.
register_cell(
    "batch_per_step", CellNorm("batch", _BN, per_step=True), params=_BN_RULES, color="#1f77b4"
)
# BN-LSTM with one set of population statistics for all time steps.
register_cell("batch_shared", CellNorm("batch", _BN), params=_BN_RULES, color="#17becf")
register_cell("rms", CellNorm("rms", {"eps": EPS}))
