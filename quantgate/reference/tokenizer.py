"""Byte-level BPE tokenizer and ChatML chat template of the reference assistant.

The tokenizer is trained with the ``tokenizers`` library on the training split of the synthetic
corpus only, so held-out entities are never merged into dedicated tokens; byte-level BPE still
encodes any string. Digits are split one per token: arithmetic and number copying are then a
per-digit skill the model can generalise, instead of thousands of memorised multi-digit tokens.
The committed tokenizer has nine more: the citations `` [1]`` ... `` [9]`` (``CITATION_TOKENS``),
one token each, added after BPE training by the recipe's second step (``cite_tune``).

The chat format is ChatML (``<|im_start|>role\\n...<|im_end|>\\n``). Tools are rendered into the
system turn one compact line each, ``name(arg: type, opt?: "a"|"b") - description``, instead of
the raw JSON schema: that keeps a 4-tool prompt near 150 tokens, which is what makes training on
two CPU cores affordable. The trade-off is that schema details beyond type/enum/required
(patterns, bounds) are not shown to the model; it learns them from the examples instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

__all__ = [
    "BOS",
    "CHAT_TEMPLATE",
    "CITATION_TOKENS",
    "EOS",
    "PAD",
    "SPECIAL_TOKENS",
    "train_tokenizer",
    "write_tokenizer_files",
]

BOS = "<|endoftext|>"
EOS = "<|im_end|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = [BOS, "<|im_start|>", EOS, PAD]
# " [n]" (n = 1..9) as one token each: a source line ends with it and an answer cites with it, so that
# citing is copying the token after the restated sentence. Added by ``cite_tune`` (the recipe's
# second step), matched before the digit split; the "[n]" that opens a line stays three tokens (made
# one token too, the model cited the next line's opening number as often as the right one).
CITATION_TOKENS = tuple(f" [{n}]" for n in range(1, 10))

DEFAULT_SYSTEM = "You are a helpful assistant."

# Jinja, rendered by transformers' sandboxed environment (trim_blocks + lstrip_blocks). `p['items']`
# is subscripted because `p.items` would resolve to the dict method.
NL = "{{ '\\n' }}"  # newline as a Jinja expression: literal newlines next to tags get trimmed

CHAT_TEMPLATE = (
    "{%- macro render_type(p) -%}"
    "{%- if p['enum'] is defined -%}{{ p['enum'] | map('tojson') | join('|') }}"
    "{%- elif p['type'] == 'array' -%}{{ render_type(p['items']) }}[]"
    "{%- elif p['type'] == 'object' -%}{{ '{' }}"
    "{%- for k in p['properties'] -%}"
    "{{ k }}{% if k not in (p['required'] or []) %}?{% endif %}: {{ render_type(p['properties'][k]) }}"
    "{%- if not loop.last %}{{ ', ' }}{% endif -%}"
    "{%- endfor -%}{{ '}' }}"
    "{%- else -%}{{ p['type'] }}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] -%}{%- set rest = messages[1:] -%}"
    "{%- else -%}"
    "{%- set system = '" + DEFAULT_SYSTEM + "' -%}{%- set rest = messages -%}"
    "{%- endif -%}"
    "<|im_start|>system" + NL + "{{ system }}"
    "{%- if tools -%}" + NL + "Tools:"
    "{%- for t in tools -%}"
    "{%- set f = t['function'] if t['function'] is defined else t -%}"
    "{%- set ps = f['parameters'] -%}"
    + NL + "{{ f['name'] }}("
    "{%- for k in ps['properties'] -%}"
    "{{ k }}{% if k not in (ps['required'] or []) %}?{% endif %}: {{ render_type(ps['properties'][k]) }}"
    "{%- if not loop.last %}{{ ', ' }}{% endif -%}"
    "{%- endfor -%}"
    ") - {{ f['description'] }}"
    "{%- endfor -%}"
    + NL + '{{ \'Call tools as <tool_call>{"name": ..., "arguments": {...}}</tool_call>\' }}'
    "{%- endif -%}"
    "<|im_end|>" + NL +
    "{%- for m in rest -%}"
    "<|im_start|>{{ m['role'] }}" + NL +
    "{%- if m['content'] %}{{ m['content'] }}{% endif -%}"
    "{%- for c in m['tool_calls'] or [] -%}"
    "{%- set fn = c['function'] if c['function'] is defined else c -%}"
    "{%- if not loop.first or m['content'] -%}" + NL + "{%- endif -%}"
    '{{ \'<tool_call>{"name": \' }}{{ fn[\'name\'] | tojson }}{{ \', "arguments": \' }}'
    "{%- if fn['arguments'] is string %}{{ fn['arguments'] }}{% else %}{{ fn['arguments'] | tojson }}{% endif -%}"
    "{{ '}</tool_call>' }}"
    "{%- endfor -%}"
    "<|im_end|>" + NL +
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant" + NL + "{%- endif -%}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a byte-level BPE of ``vocab_size`` tokens (specials included) on ``texts``."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def write_tokenizer_files(tok: Tokenizer, out_dir: Path, model_max_length: int) -> None:
    """Write tokenizer.json, tokenizer_config.json (with the chat template) and special_tokens_map.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        "padding_side": "left",
        "chat_template": CHAT_TEMPLATE,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    specials = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")
