"""Write a tiny Llama GGUF for llama.cpp's server (tests/integration/test_compat_servers.py).

Runs in the compat servers' environment (``.venv-compat``, scripts/ensure-compat-servers.sh),
which has the ``gguf`` package; imports nothing from the profiler. The vocabulary, merges,
special tokens and chat template are the embedded tiny model's (``profiler.serving.tinymodel``:
its ``tokenizer.json`` and ``tokenizer_config.json``), so infprof's ``--tokenizer`` counts what
llama.cpp counts; the weights are small random float32 values (2 layers, hidden 64).

    .venv-compat/bin/python tests/fakes/tiny_gguf.py TINY_MODEL_DIR OUT.gguf
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFWriter, TokenType

HIDDEN, LAYERS, HEADS, KV_HEADS, FFN, CONTEXT = 64, 2, 4, 2, 128, 2048


def write(model_dir: Path, out: Path, seed: int = 0) -> None:
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
    vocab: dict[str, int] = tok["model"]["vocab"]
    tokens = [""] * len(vocab)
    for piece, i in vocab.items():
        tokens[i] = piece
    special = {a["id"] for a in tok["added_tokens"] if a.get("special")}
    types = [TokenType.CONTROL if i in special else TokenType.NORMAL for i in range(len(tokens))]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]

    w = GGUFWriter(str(out), "llama")
    w.add_name("tiny-llama-gguf")
    w.add_context_length(CONTEXT)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(0)  # all float32
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_pad_token_id(3)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    if cfg.get("chat_template"):
        w.add_chat_template(cfg["chat_template"])

    rng = np.random.default_rng(seed)

    def t(name: str, *shape: int, ones: bool = False) -> None:
        data = np.ones(shape, np.float32) if ones else rng.normal(0, 0.02, shape).astype(np.float32)
        w.add_tensor(name, data)

    kv = HIDDEN // HEADS * KV_HEADS
    t("token_embd.weight", len(tokens), HIDDEN)
    for b in range(LAYERS):
        t(f"blk.{b}.attn_norm.weight", HIDDEN, ones=True)
        t(f"blk.{b}.attn_q.weight", HIDDEN, HIDDEN)
        t(f"blk.{b}.attn_k.weight", kv, HIDDEN)
        t(f"blk.{b}.attn_v.weight", kv, HIDDEN)
        t(f"blk.{b}.attn_output.weight", HIDDEN, HIDDEN)
        t(f"blk.{b}.ffn_norm.weight", HIDDEN, ones=True)
        t(f"blk.{b}.ffn_gate.weight", FFN, HIDDEN)
        t(f"blk.{b}.ffn_up.weight", FFN, HIDDEN)
        t(f"blk.{b}.ffn_down.weight", HIDDEN, FFN)
    t("output_norm.weight", HIDDEN, ones=True)
    t("output.weight", len(tokens), HIDDEN)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    write(Path(sys.argv[1]), Path(sys.argv[2]))
    print(sys.argv[2])
