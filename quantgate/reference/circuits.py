"""Hand-built attention circuits for the reference model's initialisation: copying from the prompt.

A tool call or an extraction copies names, numbers and codes out of the prompt. In a transformer
that takes an *induction circuit*: a previous-token head (layer 0) writes "the token before me" at
every position, and an induction head (layer 1) matches the current token against it and copies
what followed the earlier occurrence. Neither half is useful without the other, so gradient
descent finds the pair slowly; a 3.5M model on the chat corpus copied held-out names unreliably
after 1,700 steps. Here both halves are wired before training, in an ordinary
``LlamaForCausalLM`` (training is free to change every weight):

* ``wire_previous_token_head``: layer 0 head 0 attends to position ``n - 1`` (its query and key
  read a constant embedding feature on the fastest RoPE frequencies);
* ``wire_induction_head``: that head's value/output write a content projection of the previous
  token into a reserved subspace; layer 1 head 0's key reads that subspace and its query reads the
  current token's content, both on the slowest RoPE frequencies (so the match barely depends on
  distance), and its value/output copy the attended token's content towards its own logit (the
  embeddings are tied, so "towards the logit" is "along the embedding");
* space variants (``vocab`` given): byte-level BPE spells a word's first piece with its leading space in a
  sentence (``ĠB``) and without it after a JSON quote (``B``); both get the same content, differing
  only along one shared "space" direction that the content projections ignore, so the circuit
  copies ``ĠB`` in the prompt as either spelling.

Trade-off: the reserved subspaces take ~70 of 256 residual dimensions out of the embeddings'
random initial content, and the wiring assumes the HF Llama layout (``rotate_half`` RoPE pairs
``i`` and ``i + head_dim / 2``); it is checked by a test that runs the untrained model on repeated
random tokens.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["wire_induction_head", "wire_previous_token_head"]

SPACE = "\u0120"  # byte-level BPE's mark for a leading space


def wire_previous_token_head(model: Any, const: float = 0.2, pairs: int = 10, contrast: float = 6.0) -> None:
    """Initialise layer 0, head 0 of a Llama model as a previous-token head (before training).

    * every token embedding gets the same value ``const`` in dimension 0, a constant feature a head
      can read (with tied embeddings it adds the same amount to every logit, so it changes nothing
      in the output distribution);
    * the head's query and key read only that feature, on the ``pairs`` fastest RoPE frequencies,
      with phases chosen so that the score ``sum_i a^2 cos((m - n - 1) theta_i)`` peaks at key
      position ``n = m - 1``, ``contrast`` logits above the current and the one-before positions.

    Its value and output projections stay random unless ``wire_induction_head`` sets them.
    """
    emb = model.model.embed_tokens.weight
    attn = model.model.layers[0].self_attn
    hd = attn.head_dim
    inv = model.model.rotary_emb.inv_freq[:pairs].double()
    with torch.no_grad():
        emb[:, 0] = const
        cn = float(const / emb.pow(2).mean(1).sqrt().mean())  # the feature's size after RMSNorm
        a = (contrast / (float((1 - inv.cos()).sum()) * attn.scaling)) ** 0.5
        wq, wk = attn.q_proj.weight[:hd], attn.k_proj.weight[:hd]
        for i in range(pairs):
            for w in (wq, wk):  # pair i rotates dimensions i and i + hd/2 of the head
                w[i].zero_()
                w[i + hd // 2].zero_()
            wq[i, 0] = a * float(inv[i].cos()) / cn
            wq[i + hd // 2, 0] = -a * float(inv[i].sin()) / cn
            wk[i, 0] = a / cn


def _basis(hidden: int, seed: int) -> torch.Tensor:
    """A seeded orthonormal basis of the residual dimensions 1..hidden-1 (dimension 0 is the constant feature)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(hidden - 1, hidden - 1, generator=g, dtype=torch.float64))
    basis = torch.zeros(hidden, hidden - 1, dtype=torch.float64)
    basis[1:] = q
    return basis  # columns


def _layout(hidden: int, content: int, prev: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b = _basis(hidden, seed)
    return b[:, :content], b[:, content:content + prev], b[:, content + prev]


def _tie_space_variants(emb: torch.Tensor, vocab: dict[str, int], space: torch.Tensor, scale: float) -> int:
    """Give ``Ġword`` the embedding of ``word`` plus ``scale`` times the space direction; returns the pairs tied."""
    pairs = [(i, vocab[t[1:]]) for t, i in vocab.items() if t.startswith(SPACE) and len(t) > 1 and t[1:] in vocab]
    size = float(emb[:, 1:].norm(dim=1).mean())
    emb -= torch.outer(emb @ space, space)  # nothing else carries the space direction
    for spaced, bare in pairs:
        emb[spaced] = emb[bare] + scale * size * space
    return len(pairs)


def wire_induction_head(model: Any, *, vocab: dict[str, int] | None = None, seed: int = 1, content: int = 48,
                        prev: int = 20, slow_pairs: int = 10, write: float = 4.0, match: float = 14.0,
                        copy: float = 3.0, space_scale: float = 0.5, quiet_branches: bool = True) -> int:
    """Wire layer 0 head 0's value/output and layer 1 head 0 into an induction circuit (see the module doc).

    Call after ``wire_previous_token_head``. ``content`` residual directions carry the token
    content the circuit reads; ``prev`` more hold the previous token's content that layer 0 writes
    (``write`` scales it); ``match`` is the attention-logit margin of a matching key over an
    unrelated one; ``copy`` scales what the induction head writes. With ``vocab`` (token -> id),
    space variants are tied first, along a direction of the same layout; returns how many were.
    """
    emb = model.model.embed_tokens.weight
    hidden = emb.shape[1]
    l0, l1 = model.model.layers[0].self_attn, model.model.layers[1].self_attn
    hd = l0.head_dim
    pairs = min(slow_pairs, hd // 2)
    u, w, space = (m.to(emb.dtype) for m in _layout(hidden, content, prev, seed))
    q_rows = [i for i in range(hd // 2 - pairs, hd // 2)] + [i + hd // 2 for i in range(hd // 2 - pairs, hd // 2)]
    k = len(q_rows)
    if k > prev or k > content:
        raise ValueError(f"slow_pairs={slow_pairs} needs {k} content and prev directions")
    width = min(content, hd)
    with torch.no_grad():
        tied = _tie_space_variants(emb, vocab, space, space_scale) if vocab is not None else 0
        emb -= (emb @ w) @ w.T  # the prev subspace starts empty: what layer 0 writes there is the only signal
        # Layer 0 head 0: value = the first k content coordinates of the (normalised) previous token,
        # output = those coordinates written into the prev subspace.
        l0.v_proj.weight[:hd].zero_()
        l0.v_proj.weight[:k] = u[:, :k].T
        l0.o_proj.weight[:, :hd].zero_()
        l0.o_proj.weight[:, :k] = write * w[:, :k] / hd ** 0.5
        # Layer 1 head 0: query = current token content, key = the prev subspace, on the slow pairs.
        for proj in (l1.q_proj, l1.k_proj, l1.v_proj):
            proj.weight[:hd].zero_()
        l1.q_proj.weight[q_rows] = u[:, :k].T
        l1.k_proj.weight[q_rows] = w[:, :k].T
        l1.v_proj.weight[:width] = u[:, :width].T
        l1.o_proj.weight[:, :hd].zero_()
        l1.o_proj.weight[:, :width] = copy * u[:, :width]
        if quiet_branches:
            _quiet_other_branches(model, hd)
        _scale_match(model, q_rows, match)
    return tied


def _quiet_other_branches(model: Any, hd: int) -> None:
    """Zero every residual branch's output except the two wired heads (a "zero-init residual" start).

    Random heads and MLPs at init add noise of the same size as the token content the circuit
    reads; starting them at zero output keeps the circuit clean. Their output projections still get
    gradients from the first step (their inputs are not zero), so they grow as training needs them.
    """
    for i, layer in enumerate(model.model.layers):
        layer.mlp.down_proj.weight.zero_()
        o = layer.self_attn.o_proj.weight
        if i < 2:
            o[:, hd:].zero_()
        else:
            o.zero_()


def _scale_match(model: Any, q_rows: list[int], margin: float) -> None:
    """Scale layer 1 head 0's query/key so a match scores ``margin`` attention logits over a non-match.

    Measured, not derived: RMSNorm divides by whatever the residual holds, so the factor is taken
    from the untrained model on a repeated random sequence.
    """
    l1 = model.model.layers[1].self_attn
    n = 48  # the repeated sequence's length
    half = torch.randint(0, model.model.embed_tokens.weight.shape[0], (4, n), generator=torch.Generator().manual_seed(0))
    inputs: list[torch.Tensor] = []

    def hook(mod: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        inputs.append(args[0] if args else kwargs["hidden_states"])  # already normalised

    handle = l1.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        model(input_ids=torch.cat([half, half], dim=1))
    finally:
        handle.remove()
    hd = l1.head_dim
    q = inputs[0] @ l1.q_proj.weight[:hd].T
    k = inputs[0] @ l1.k_proj.weight[:hd].T
    s = (q[:, n:, q_rows] @ k[:, :, q_rows].transpose(1, 2)) * l1.scaling  # no RoPE: slow pairs barely turn
    rows, target = torch.arange(n), torch.arange(n) + 1  # token n+j matches key j+1 (whose previous token is j)
    hit = s[:, rows, target].mean()
    mask = torch.ones_like(s, dtype=torch.bool)
    mask[:, rows, target] = False
    factor = (margin / float(hit - s[mask].mean())) ** 0.5
    l1.q_proj.weight[q_rows] *= factor
    l1.k_proj.weight[q_rows] *= factor
