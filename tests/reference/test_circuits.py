"""The hand-wired copy circuit: an untrained model must already attend and copy as designed."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from quantgate.reference.circuits import SPACE, wire_induction_head, wire_previous_token_head  # noqa: E402

VOCAB = 512


def _model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True,
                                        attn_implementation="eager")).eval()


def _repeated(length: int = 60) -> torch.Tensor:
    half = torch.randint(4, VOCAB, (4, length), generator=torch.Generator().manual_seed(3))
    return torch.cat([half, half], dim=1)


def test_previous_token_head_is_wired_at_init() -> None:
    model = _model()
    ids = torch.randint(0, VOCAB, (2, 40))
    wire_previous_token_head(model)
    attn = model(input_ids=ids, output_attentions=True).attentions[0][:, 0]  # layer 0, head 0
    assert torch.stack([attn[:, i, i - 1] for i in range(1, 40)]).mean() > 0.9


def _second_half(model: LlamaForCausalLM, ids: torch.Tensor) -> tuple[float, float]:
    """Layer 1 head 0's attention on the induction target and argmax accuracy over the repeat."""
    n = ids.shape[1] // 2
    with torch.no_grad():
        out = model(input_ids=ids, output_attentions=True)
    pos = torch.arange(n, 2 * n - 1)
    on_target = float(out.attentions[1][:, 0][:, pos, pos - n + 1].mean())  # the token after the earlier copy
    acc = float((out.logits[:, n:2 * n - 1].argmax(-1) == ids[:, n + 1:]).float().mean())
    return on_target, acc


def test_induction_circuit_copies_a_repeated_sequence_before_training() -> None:
    ids = _repeated()
    plain = _model()
    wire_previous_token_head(plain)
    wired = _model()
    wire_previous_token_head(wired)
    wire_induction_head(wired)
    assert _second_half(plain, ids)[1] < 0.05
    on_target, acc = _second_half(wired, ids)
    assert on_target > 0.6 and acc > 0.5


def test_space_variants_share_their_content() -> None:
    model = _model()
    vocab = {"ab": 0, SPACE + "ab": 1, SPACE + "cd": 2} | {f"x{i}": i for i in range(3, VOCAB)}
    wire_previous_token_head(model)
    assert wire_induction_head(model, vocab=vocab) == 1  # "Ġcd" has no bare spelling to share with
    emb = model.model.embed_tokens.weight.detach()
    diff = emb[1] - emb[0]
    others = emb[2:] - emb[2:].mean(0)
    assert float(diff.norm()) > 0
    # the difference is the one shared space direction, which no other token carries
    assert float((others @ diff).abs().max()) < 1e-5 * float(diff.norm()) * float(others.norm(dim=1).max())


def test_induction_wiring_refuses_more_slow_dimensions_than_reserved() -> None:
    with pytest.raises(ValueError, match="slow_pairs"):
        wire_induction_head(_model(), slow_pairs=16, prev=20)
