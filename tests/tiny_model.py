"""A tiny offline Llama model directory for tests: random weights, a byte-level BPE tokenizer
trained on a few strings, ChatML specials and SmolLM2's chat template. Builds in well under a
second and needs no network.

    from tiny_model import make_tiny_model_dir  # tests/ is on sys.path under pytest
    path = make_tiny_model_dir(tmp_path / "tiny")     # a Hugging Face directory
"""

from __future__ import annotations

from pathlib import Path

# SmolLM2-135M-Instruct's template, as its GGUF file carries it.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "What is 7 + 5? The answer is 12.",
    "def add(a, b):\n    return a + b\n",
    "Correct solution:\n\nAnother successful solution:\n\nA known failed solution (avoid repeating this mistake):",
    "The following is feedback from your unsuccessful earlier attempt:\n\nCorrectly solve the original question.",
    "Please reason step by step, and put your final answer within \\boxed{}.",
    "system user assistant You are a helpful AI assistant named SmolLM, trained by Hugging Face",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 plus minus times equals",
]


def make_tiny_tokenizer(vocab_size: int = 320):
    """A byte-level BPE ``PreTrainedTokenizerFast`` (any text encodes) with ChatML specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(CORPUS, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def make_tiny_model(
    seed: int = 0,
    vocab_size: int | None = None,
    *,
    init_std: float = 0.3,
    layers: int = 2,
    hidden: int = 32,
    heads: int = 4,
    kv_heads: int = 2,
):
    """``(model, tokenizer)``: a random Llama (default hidden 32, 4 heads, 2 kv heads) in float32.

    ``init_std`` is larger than Llama's 0.02 so the next-token distributions are far from uniform
    and comparisons of log-probs are meaningful. vLLM's kernels want a head size of 64 or so:
    ``hidden=128, heads=2, kv_heads=1``.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = make_tiny_tokenizer()
    cfg = LlamaConfig(
        vocab_size=vocab_size or len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        initializer_range=init_std,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    return model, tok


def make_tiny_model_dir(path: str | Path, seed: int = 0, **kw) -> Path:
    """Save the tiny model and tokenizer as a Hugging Face directory at ``path``; return it.

    Keyword arguments go to ``make_tiny_model``.
    """
    path = Path(path)
    model, tok = make_tiny_model(seed, **kw)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
