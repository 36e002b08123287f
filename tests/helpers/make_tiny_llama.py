"""Write a tiny random Llama (hidden 256, 4 heads, 2 KV heads, head_dim 64, 2 layers) with a
BPE tokenizer trained on a few sentences and a chat template: a real model directory that
vLLM's CPU backend serves. Run with the vLLM environment's Python:

    python make_tiny_llama.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    text = ["The quick brown fox jumps over the lazy dog.", "Local servers answer questions quickly.",
            "Summaries are short; reasoning takes longer.", "llmctl starts, watches and stops servers."] * 50
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                          "{% if add_generation_prompt %}assistant: {% endif %}")
    fast.save_pretrained(out)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=512,
                      bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).to(torch.float32)
    # random weights pick any token: a lone byte of a UTF-8 sequence or a special token streams
    # as an empty piece, and a greedy answer of only those has no text. Zero their rows of the
    # output layer, so that greedy decoding picks printable ASCII.
    with torch.no_grad():
        for tid in range(len(fast)):
            text = fast.decode([tid])
            if not (text and text.isascii() and text.isprintable()):
                model.lm_head.weight[tid].zero_()
    model.save_pretrained(out, safe_serialization=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
