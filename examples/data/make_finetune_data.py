"""Write the finetuning example data: ``python examples/data/make_finetune_data.py``.

Both files come from Corral's own templates (:mod:`workers.core.labeled_corpus`), so they carry
no licence question; rerunning the script rewrites them byte for byte.

* ``topics.jsonl`` — 400 ``{"text", "label"}`` sentences, labels 0 weather, 1 food, 2 sports,
  3 music (``examples/classify-minilm.yaml``);
* ``story-questions.jsonl`` — 1000 ``{"prompt", "response"}`` pairs: a story's opening and a
  question about it (``examples/finetune-full.yaml``, ``examples/finetune-lora.yaml``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workers.core.labeled_corpus import question_records, topic_records

HERE = Path(__file__).resolve().parent
SEED = 0


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """One JSON object per line, keys in a fixed order."""
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records),
                    encoding="utf-8")


def main() -> None:
    write_jsonl(HERE / "topics.jsonl", topic_records(SEED, 400))
    write_jsonl(HERE / "story-questions.jsonl", question_records(SEED, 1000))


if __name__ == "__main__":
    main()
