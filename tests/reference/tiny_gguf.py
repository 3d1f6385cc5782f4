"""Small Llama-family GGUF files for tests and benchmarks: the header fields, a
byte vocabulary, and the tensor layout (names and shapes in file order), with
the values left to the caller. Used by tests/model/test_synthetic.py,
tests/lora/test_lora.py, tests/launch/launch_common.py and
bench/tiny_serving_model.py."""


def add_header(w, *, n_layer, n_embd, n_head, n_kv, n_ff, ctx=256, rope_base=10000.0):
    """Block count, context, widths, head counts, RMSNorm eps 1e-5 and the RoPE base."""
    w.add_block_count(n_layer)
    w.add_context_length(ctx)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(rope_base)


def add_byte_vocab(w, vocab):
    """A gpt2-style vocabulary of `vocab` one-character tokens (then <tN>), no merges:
    enough for the HF converter to write a tokenizer.json."""
    w.add_tokenizer_model("gpt2")
    w.add_token_list([chr(0x21 + i) if i < 94 else f"<t{i}>" for i in range(vocab)])
    w.add_token_types([1] * vocab)
    w.add_token_merges([])


def tensors(*, n_layer, n_embd, n_head, n_kv, n_ff, vocab, head_dim=None, untied=False,
            bias=False):
    """(name, kind, rows, cols) of every tensor in file order. kind: "embd" (the
    token embedding), "mat" (a weight of (rows, cols)), "norm" (a vector of rows
    RMSNorm weights) or "bias" (a vector of rows biases); cols is 0 for vectors."""
    hd = head_dim or n_embd // n_head
    yield "token_embd.weight", "embd", vocab, n_embd
    yield "output_norm.weight", "norm", n_embd, 0
    if untied:
        yield "output.weight", "mat", vocab, n_embd
    for layer in range(n_layer):
        p = f"blk.{layer}."
        yield p + "attn_norm.weight", "norm", n_embd, 0
        yield p + "ffn_norm.weight", "norm", n_embd, 0
        yield p + "attn_q.weight", "mat", n_head * hd, n_embd
        yield p + "attn_k.weight", "mat", n_kv * hd, n_embd
        yield p + "attn_v.weight", "mat", n_kv * hd, n_embd
        yield p + "attn_output.weight", "mat", n_embd, n_head * hd
        yield p + "ffn_gate.weight", "mat", n_ff, n_embd
        yield p + "ffn_up.weight", "mat", n_ff, n_embd
        yield p + "ffn_down.weight", "mat", n_embd, n_ff
        if bias:
            yield p + "attn_q.bias", "bias", n_head * hd, 0
            yield p + "attn_k.bias", "bias", n_kv * hd, 0
            yield p + "attn_v.bias", "bias", n_kv * hd, 0


def write(w):
    """Header, key-values and tensors to the file, then close."""
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
