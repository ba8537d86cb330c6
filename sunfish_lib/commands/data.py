"""`sunfish data`: what the data pipeline yields for a source (documents, tokens, packing, tokens/s)."""

from __future__ import annotations

import json

from sunfish_lib.errors import SunfishError


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="what the data pipeline yields for a source: documents, tokens, packing, tokens/s")
    p.add_argument("--source", default="shakespeare",
                   help="shakespeare, fineweb[:CONFIG], fineweb-edu[:CONFIG], or a .txt/.jsonl/.parquet path/glob")
    p.add_argument("--tokenizer", default="bpe", help="bpe (offline BPE), an HF tokenizer name, or a folder")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per packed sequence")
    p.add_argument("--max-docs", type=int, default=1000, help="documents to read (0: all)")
    p.add_argument("--text-field", default="text", help="field holding the text in .jsonl/.parquet records")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    # lazy: torch and Lightning are behind these; `sunfish --help` and `runs` must not import them
    from sunfish_lib.data.summary import summarize_source

    if args.seq_len <= 0 or args.max_docs < 0:
        raise SunfishError("--seq-len must be > 0 and --max-docs >= 0")
    summary = summarize_source(args.source, args.tokenizer, seq_len=args.seq_len, max_docs=args.max_docs or None,
                               text_field=args.text_field)
    if args.json:
        print(json.dumps(summary))
        return 0
    for key, value in summary.items():
        shown = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else value
        print(f"{key.replace('_', ' '):>30}: {shown}")
    return 0
