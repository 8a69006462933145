"""Make the tiny Llama model the real-vLLM suite serves: nothing is downloaded.

A byte-level BPE tokenizer trained on local text, a 2-layer Llama config, random weights saved
as safetensors and a chat template, written to one folder that vLLM loads with
HF_HUB_OFFLINE=1. The weights are seeded, so the same folder comes out on every machine and
greedy decoding gives the same text every run.

Sizes follow what vLLM's CPU build needs: its attention kernels want a head size of 32 or more
(hidden 512 over 16 heads here); 16 loads but the first request kills the engine.

Run with the engine's venv: `.venv-vllm/bin/python tests/vllm/tiny_model.py DIR`.
"""

from __future__ import annotations

import glob
import json
import os
import sys

VOCAB = 2048
# Room for streams that last seconds on the CPU (about a millisecond a token here).
MAX_POSITIONS = 4096
LORA_RANK = 8
# 12 M parameters (48 MB): decoding takes a few ms a step on one core. A smaller model (hidden
# 128, 2 layers) decodes so fast that the engine's API process, busy with a thousand tokens a
# second, answered /metrics seconds late on two cores.
HIDDEN = 512
LAYERS = 4
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIALS = ["<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
# The text the tokenizer learns from: licence texts every Debian system carries.
CORPUS = sorted(glob.glob("/usr/share/common-licenses/*"))


def make_tokenizer(out: str) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    files = [f for f in CORPUS if os.path.isfile(f)]
    if not files:
        raise SystemExit("no text under /usr/share/common-licenses to train the tokenizer on")
    tok.train(files, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)


def make_model(out: str) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=LAYERS,
        num_attention_heads=HIDDEN // 32, num_key_value_heads=HIDDEN // 32, max_position_embeddings=MAX_POSITIONS,
        bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=False,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)


def make_lora(model_dir: str, out: str) -> None:
    """A LoRA adapter for the model (random, seeded), as PEFT writes one: vLLM lists a loaded
    adapter in /v1/models with `parent` naming the base model and `root` its path."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(1)
    os.makedirs(out, exist_ok=True)
    tensors = {}
    for layer in range(LAYERS):
        for proj in ("q_proj", "v_proj"):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(LORA_RANK, HIDDEN) * 0.01
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(HIDDEN, LORA_RANK) * 0.01
    save_file(tensors, os.path.join(out, "adapter_model.safetensors"))
    with open(os.path.join(out, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": LORA_RANK, "lora_alpha": 16,
                   "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
                   "target_modules": ["q_proj", "v_proj"], "base_model_name_or_path": model_dir}, f)


def main() -> int:
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} DIR", file=sys.stderr)
        return 2
    out = sys.argv[1]
    done = os.path.join(out, ".complete")
    if os.path.exists(done):
        return 0
    os.makedirs(out, exist_ok=True)
    make_tokenizer(out)
    make_model(out)
    make_lora(out, os.path.join(out, "lora"))
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        # Greedy unless a request says otherwise, and no sampling defaults from a hub.
        json.dump({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}, f)
    open(done, "w").close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
