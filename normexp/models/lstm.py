"""LSTM language model: embedding -> L LSTM layers -> linear decoder, the cell chosen by config.

The cell comes from ``norm.name`` (see ``normexp.models.lstm_cells`` for what each one
normalizes): ``none`` runs PyTorch's fused ``nn.LSTM``; ``layer``, ``batch_per_step``,
``batch_shared`` and ``rms`` run ``NormLSTM``. ``norm.position`` is required by the rest of the
suite but unused here: each cell fixes where it normalizes (the gate pre-activations and the
cell state). Dropout is applied to the non-recurrent connections only (Zaremba et al. 2014):
after the embedding, between layers and before the decoder.
"""

from collections.abc import Mapping

from torch import Tensor, nn

from normexp.errors import ConfigError
from normexp.models.lstm_cells import BATCH_CELLS, BN_GAMMA_INIT, CELLS, NormLSTM
from normexp.norms.validity import check_position
from normexp.validate_fields import check_choice, check_int, check_number

# Keyword arguments each cell accepts from the norm config, besides name and position.
CELL_PARAMETERS = {
    "none": (),
    "layer": ("eps",),
    "rms": ("eps",),
    "batch_per_step": ("eps", "momentum", "gamma_init"),
    "batch_shared": ("eps", "momentum", "gamma_init"),
}
_REFUSED_BECAUSE = {
    "instance": "its set S would be one neuron (one value per unit, sample and step), so "
    "x - mu is always 0",
    "batch": "a recurrent layer needs to say which statistics it keeps over time: use "
    "batch_per_step (Cooijmans et al.) or batch_shared",
    "group": "group norm over hidden units is not offered; layer is its one-group case",
}


def check_lstm(model: Mapping, norm: Mapping, batch_size: int, seq_len: int) -> None:
    """Raise ConfigError (naming the field) if this LSTM / cell combination is undefined."""
    if model["name"] != "lstm":
        raise ConfigError(
            "model.name", f"unknown {model['name']!r} for language models; allowed: lstm"
        )
    name = norm["name"]
    if name not in CELLS:
        why = _REFUSED_BECAUSE.get(name, "not an LSTM cell")
        raise ConfigError(
            "norm.name",
            f"{name!r} is undefined for recurrent layers ({why}); allowed: {', '.join(CELLS)}",
        )
    check_position(norm["position"])
    allowed = CELL_PARAMETERS[name]
    for key in norm:
        if key not in ("name", "position", *allowed):
            listed = ", ".join(allowed) or "none"
            raise ConfigError(
                f"norm.{key}", f"not a parameter of the {name!r} LSTM cell; allowed: {listed}"
            )
    if "eps" in norm:
        check_number("norm.eps", norm["eps"], strict=True)
    if "momentum" in norm:
        check_number("norm.momentum", norm["momentum"], strict=True)
        if norm["momentum"] > 1:
            raise ConfigError("norm.momentum", f"{norm['momentum']} must be in (0, 1]")
    if "gamma_init" in norm:
        check_number("norm.gamma_init", norm["gamma_init"], strict=True)
    if name in BATCH_CELLS and batch_size < 2:
        raise ConfigError(
            "train.batch_size",
            f"{name!r} pools each statistic over the batch: {batch_size} value per statistic "
            "leaves the variance undefined; use batch_size >= 2 or a per-sample cell",
        )
    for field in ("emb", "hidden", "layers"):
        check_int(f"model.{field}", model[field])
    check_number("model.dropout", model["dropout"])
    if model["dropout"] >= 1:
        raise ConfigError("model.dropout", f"{model['dropout']} must be < 1")
    check_choice("model.tie_weights", model["tie_weights"], (True, False))
    if model["tie_weights"] and model["emb"] != model["hidden"]:
        raise ConfigError(
            "model.tie_weights",
            f"the decoder shares the embedding matrix only if model.emb ({model['emb']}) equals "
            f"model.hidden ({model['hidden']})",
        )
    check_int("train.seq_len", seq_len)


class LSTMLanguageModel(nn.Module):
    """Next-token logits for a (T, B) window of token ids, carrying (h, c) between windows."""

    def __init__(
        self,
        vocab_size: int,
        emb: int,
        hidden: int,
        layers: int,
        cell: str = "none",
        dropout: float = 0.0,
        tie_weights: bool = False,
        max_steps: int = 100,
        **cell_kwargs: float,
    ) -> None:
        super().__init__()
        self.cell, self.hidden, self.layers = cell, hidden, layers
        self.embedding = nn.Embedding(vocab_size, emb)
        self.drop = nn.Dropout(dropout)
        if cell == "none":
            self.rnn = nn.LSTM(emb, hidden, layers, dropout=dropout if layers > 1 else 0.0)
        else:
            self.rnn = NormLSTM(
                emb, hidden, layers, cell, dropout, max_steps=max_steps, **cell_kwargs
            )
        self.decoder = nn.Linear(hidden, vocab_size)
        # The word_language_model initialization of the embedding and decoder (PyTorch examples).
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        if tie_weights:
            self.decoder.weight = self.embedding.weight
        else:
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(
        self, tokens: Tensor, state: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """(T, B) ids -> ((T, B, vocab) logits, final (h, c), each (layers, B, hidden))."""
        x = self.drop(self.embedding(tokens))
        out, state = self.rnn(x, state)
        return self.decoder(self.drop(out)), state


def build_language_model(
    model: Mapping, norm: Mapping, vocab_size: int, max_steps: int
) -> LSTMLanguageModel:
    """The model of ``model`` / ``norm`` config nodes; ``max_steps`` is the training window
    length, the number of per-step statistics ``batch_per_step`` keeps."""
    cell = norm["name"]
    kwargs = {}
    if cell != "none":
        kwargs["eps"] = norm.get("eps", 1e-5)
    if cell in BATCH_CELLS:
        kwargs["bn_momentum"] = norm.get("momentum", 0.1)
        kwargs["bn_gamma_init"] = norm.get("gamma_init", BN_GAMMA_INIT)
    return LSTMLanguageModel(
        vocab_size,
        model["emb"],
        model["hidden"],
        model["layers"],
        cell,
        model["dropout"],
        model["tie_weights"],
        max_steps,
        **kwargs,
    )


def detach_state(state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Truncated BPTT: carry the values into the next window, not the graph."""
    return state[0].detach(), state[1].detach()


__all__ = [
    "CELLS",
    "LSTMLanguageModel",
    "build_language_model",
    "check_lstm",
    "detach_state",
]
