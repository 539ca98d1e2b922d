"""LSTM language model: embedding -> L LSTM layers -> linear decoder, the cell chosen by config.

The cell comes from ``norm.name``: the norms registered for LSTM cells
(``normexp.norms.recurrent``, see ``normexp.models.lstm_cells`` for what each one normalizes).
``none`` runs PyTorch's fused ``nn.LSTM``; the others run ``NormLSTM``. ``norm.position`` is
checked like every norm config's but unused here: each cell fixes where it normalizes (the gate
pre-activations and the cell state). Dropout is applied to the non-recurrent connections only
(Zaremba et al. 2014): after the embedding, between layers and before the decoder.
"""

from collections.abc import Mapping

from torch import Tensor, nn

from normexp.errors import ConfigError
from normexp.models.lstm_cells import CELLS, NormLSTM
from normexp.norms.registry import check_position, norm_parameters, split_norm_config
from normexp.norms.validity import check_norm
from normexp.validate_fields import check_choice, check_int, check_number

# Keyword arguments each cell accepts from the norm config, besides name and position (read from
# the registry; kept for the modules that import it from here).
CELL_PARAMETERS = {cell: tuple(norm_parameters(cell, "recurrent")) for cell in CELLS}


def check_lstm(model: Mapping, norm: Mapping, batch_size: int, seq_len: int) -> None:
    """Raise ConfigError (naming the field) if this LSTM / cell combination is undefined."""
    if model["name"] != "lstm":
        raise ConfigError(
            "model.name", f"unknown {model['name']!r} for language models; allowed: lstm"
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
    name, position, kwargs = split_norm_config(norm)
    # Normalized: the 4H gate pre-activations and the H cell units; a batch statistic pools one
    # value per sample (per unit and step).
    hidden = model["hidden"]
    check_norm(name, "recurrent", [4 * hidden, hidden], batch_size, kwargs, batch_size)
    check_position(position)
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
        **cell_kwargs: float,  # the cell norm's parameters (normexp.norms.recurrent)
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
    cell, _, kwargs = split_norm_config(norm)
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
    "CELL_PARAMETERS",
    "LSTMLanguageModel",
    "build_language_model",
    "check_lstm",
    "detach_state",
]
