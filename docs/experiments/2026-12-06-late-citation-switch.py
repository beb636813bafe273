"""The 2026-12-06 late-switch probe (docs/reference-model.md, "So switch late"), kept as run.

python docs/experiments/2026-12-06-late-citation-switch.py MIX 300   # from a checkout of 9fac27c; writes /tmp/exp/ft1
"""
import re, random, sys, time, dataclasses, json
import torch
from tokenizers import Tokenizer, AddedToken
from transformers import AutoTokenizer, AutoModelForCausalLM
from quantgate.reference import WEIGHTS_DIR
from quantgate.reference.corpus import generate_kind
from quantgate.reference.tokenizer import write_tokenizer_files, PAD
from quantgate.reference.train import encode_examples, _batches, _collate, _weighted_loss

torch.set_num_threads(2); torch.manual_seed(0)
mode = sys.argv[1]  # "C1": format C, single tokens
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 300
bpe = Tokenizer.from_file(str(WEIGHTS_DIR / "tokenizer.json"))
n0 = bpe.get_vocab_size()
bpe.add_tokens([AddedToken(f" [{i}]", normalized=False) for i in range(1, 10)])
write_tokenizer_files(bpe, __import__("pathlib").Path("/tmp/exp/ft1"), 1024)
tok = AutoTokenizer.from_pretrained("/tmp/exp/ft1")
model = AutoModelForCausalLM.from_pretrained(WEIGHTS_DIR)
model.resize_token_embeddings(bpe.get_vocab_size())
emb = model.get_input_embeddings().weight
with torch.no_grad():
    for i in range(1, 10):
        d = emb[bpe.token_to_id(str(i))]
        emb[bpe.token_to_id(f" [{i}]")] = d + emb[bpe.token_to_id("Ġ[")]
LINE = re.compile(r"^\[(\d)\] (.*)\.$", re.M)
def fmt(ex):
    msgs = [dict(m) for m in ex.messages]
    msgs[-1]["content"] = LINE.sub(lambda m: f"[{m[1]}] {m[2]} [{m[1]}].", msgs[-1]["content"])
    return dataclasses.replace(ex, messages=msgs)
from quantgate.reference.corpus import generate
train = [fmt(e) for e in generate(8000, 7, "train")]
# probe set: held-out, one question
held = [fmt(e) for e in generate_kind("cited", 400, 11, "heldout") if len(e.expected["sources"]) == 1][:150]
cite_ids = {i: bpe.token_to_id(f" [{i}]") for i in range(1, 10)}
@torch.no_grad()
def probe():
    model.eval(); ok = okv = 0
    for ex in held:
        p = tok.apply_chat_template(ex.messages, tools=None, add_generation_prompt=True, tokenize=False)
        tgt = ex.target
        k = tgt.index(" [")
        ids = tok(p, add_special_tokens=False)["input_ids"] + tok(tgt[:k], add_special_tokens=False)["input_ids"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lg = model(input_ids=torch.tensor([ids])).logits[0, -1].float()
        n = ex.expected["n_sources"]; gold = ex.expected["sources"][0]
        cand = torch.tensor([cite_ids[i] for i in range(1, n + 1)])
        ok += int(int(lg[cand].argmax()) + 1 == gold)
        okv += int(int(lg.argmax()) == cite_ids[gold])
    model.train()
    return ok / len(held), okv / len(held)
print("step 0 probe (listed argmax, full argmax):", probe(), flush=True)
enc = encode_examples(tok, train, 1024)
pad = tok.convert_tokens_to_ids(PAD)
opt = torch.optim.AdamW(model.parameters(), lr=2e-4, betas=(0.9, 0.95), weight_decay=0.0)
rng = random.Random(0); batches = []; t0 = time.time()
for step in range(steps):
    if not batches: batches = _batches(enc, 6144, rng)
    ids, mask, role = _collate(enc, batches.pop(), pad)
    for g in opt.param_groups: g["lr"] = 2e-4 * min(1, (step + 1) / 20)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, al = _weighted_loss(model, ids, mask, role, 0.3)
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step()
    if (step + 1) % 100 == 0:
        print(f"step {step+1} loss {al:.4f} {time.time()-t0:.0f}s probe", probe(), flush=True)

model.eval(); model.save_pretrained("/tmp/exp/ft1", safe_serialization=True); print("saved", flush=True)
