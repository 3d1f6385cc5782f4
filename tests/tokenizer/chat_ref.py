#!/usr/bin/env python3
"""Checks tsr_chat_render against the model's real Jinja chat template,
rendered by jinja2 as Hugging Face's apply_chat_template does (trim_blocks,
lstrip_blocks, bos_token/eos_token in the context), for a set of
conversations.

  chat_ref.py --dump build/.../tsr_tok_dump [--model M.gguf]

Exit status: 0 pass, 1 mismatch, 77 skipped (no model or no jinja2).
"""

import argparse
import json
import os
import subprocess
import sys

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are terse."},
     {"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Tell me a joke."}],
    [{"role": "system", "content": "  padded system  \n"},
     {"role": "user", "content": "\n  spaced  \n"}],
    [{"role": "user", "content": "unicode: café 你好 👍🏽 <|im_end|> {{ not jinja }}"}],
    [{"role": "assistant", "content": "I start."}],
    [],
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dump", required=True)
    ap.add_argument("--model", default=os.path.expanduser(
        "~/.cache/tessera/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    a = ap.parse_args()
    if not os.path.isfile(a.model):
        print(f"SKIP: model not found at {a.model} (run scripts/fetch-model.sh)")
        return 77
    try:
        import jinja2
    except ImportError:
        print("SKIP: jinja2 not available to this Python")
        return 77

    p = subprocess.run([a.dump, "--gguf", a.model, "--info"], capture_output=True)
    if p.returncode != 0:
        print(p.stderr.decode(errors="replace"))
        return 1
    info = json.loads(p.stdout)
    tmpl = info["chat_template"]
    if tmpl is None:
        print("SKIP: the model has no chat template")
        return 77
    # The tokens' texts, for bos_token/eos_token.
    dump_in = "".join(json.dumps({"messages": c, "add_generation_prompt": g}) + "\n"
                      for c in CONVERSATIONS for g in (True, False))
    p = subprocess.run([a.dump, "--gguf", a.model, "--chat"], input=dump_in.encode(),
                       capture_output=True)
    if p.returncode != 0:
        print(p.stderr.decode(errors="replace"))
        return 1
    got = [json.loads(x) for x in p.stdout.decode().splitlines()]

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    t = env.from_string(tmpl)
    bad, k = 0, 0
    for c in CONVERSATIONS:
        for g in (True, False):
            want = t.render(messages=c, add_generation_prompt=g, bos_token="<|im_start|>",
                            eos_token="<|im_end|>")
            r = got[k]
            k += 1
            if r.get("text") != want:
                bad += 1
                print(f"MISMATCH (add_generation_prompt={g}) {c!r}\n  C    : {r!r}\n"
                      f"  jinja: {want!r}")
    print(f"chat ({info['chat_style']}): {k - bad}/{k} renderings identical to jinja2")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
