"""ocr-rec: a text-line recognizer with a CTC head (PaddleOCR's PP-OCR rec, CRNN/SVTR): greedy CTC
decoding with the model's character dictionary, scored by word accuracy (the whole line right) and
1 − normalised edit distance (Levenshtein, rapidfuzz) against `image<TAB>text` labels.

The dictionary comes from the ONNX metadata key `character` (PaddleOCR's exports carry it: one
character per line), from `dictionary: FILE` (the same format; PaddleOCR's ppocr_keys_v1.txt), or
from the metadata of an earlier edgepipe file. Index 0 is CTC's blank; a model one wider than
blank + the dictionary also reads a space last (PaddleOCR's use_space_char). Spaces are left out when
texts are compared (`ignore_space`, on by default, as PaddleOCR's RecMetric).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgepipe.devices import EdgepipeError
from edgepipe.runtime.tasks.base import Score, Task, match_files, read_tsv, register_task

LABEL_FILES = ("labels.tsv", "rec_gt.txt", "gt.txt", "label.txt")


def edit_similarity(a: str, b: str) -> float:
    """1 − the Levenshtein distance over the longer string's length (1.0 for two empty strings)."""
    from rapidfuzz.distance import Levenshtein

    return 1.0 - Levenshtein.normalized_distance(a, b)


@register_task
class OcrRec(Task):
    name = "ocr-rec"
    metric = "word accuracy"
    options = {"dictionary": None, "characters": None, "ignore_space": True}
    labels_hint = "labels.tsv (or PaddleOCR's rec_gt.txt): image<TAB>text per line"

    def configure(self, outputs, input_names, metadata) -> None:
        chars = self.settings.get("characters")
        if chars is None and self.settings.get("dictionary"):
            path = Path(self.settings["dictionary"])
            if not path.is_file():
                raise EdgepipeError(f"task ocr-rec dictionary {path}: not found; give the model's character file")
            chars = path.read_text(encoding="utf-8").splitlines()
        elif chars is None and metadata.get("character"):
            chars = metadata["character"].splitlines()
        if chars is None:
            raise EdgepipeError(
                "task ocr-rec: the model carries no character dictionary (ONNX metadata 'character'); give it "
                "with --task-opt dictionary=FILE (one character per line, as PaddleOCR's ppocr_keys_v1.txt)"
            )
        out = outputs[0].shape
        width = out[-1] if out and isinstance(out[-1], int) else None
        if len(out) != 3:
            raise EdgepipeError(f"task ocr-rec: the model's output {outputs[0].name} is {out}, not N×T×classes")
        if width is not None and width not in (len(chars) + 1, len(chars) + 2):
            raise EdgepipeError(
                f"task ocr-rec: the dictionary has {len(chars)} characters, the model's output is {width} wide "
                f"(blank + {width - 1} classes, or + a space); give the dictionary the model was trained with"
            )
        space = width == len(chars) + 2
        self.table = ["", *chars, *([" "] if space else [])]
        self.settings["characters"] = None  # a dictionary file is not stored again; the metadata keeps one

    def decode(self, outputs, meta):
        probs = np.asarray(next(iter(outputs.values())))[0]  # T×classes
        idx = probs.argmax(axis=1)
        keep = np.ones(len(idx), dtype=bool)
        keep[1:] = idx[1:] != idx[:-1]  # collapse repeats, then drop the blank
        keep &= idx != 0
        text = "".join(self.table[i] for i in idx[keep])
        conf = float(probs.max(axis=1)[keep].mean()) if keep.any() else 0.0
        return {"text": text, "confidence": conf}

    def score(self, preds, labels) -> Score:
        texts = [p["text"] for p in preds]
        truth = [t["text"] if isinstance(t, dict) else t for t in labels]
        if self.settings["ignore_space"]:  # as PaddleOCR's RecMetric does by default
            texts, truth = [t.replace(" ", "") for t in texts], [t.replace(" ", "") for t in truth]
        exact = np.array([a == b for a, b in zip(texts, truth)], dtype=np.float64)
        sim = np.array([edit_similarity(a, b) for a, b in zip(texts, truth)])
        figures = {"edit_similarity": float(sim.mean()) if len(sim) else None, "samples": len(texts)}
        return Score(float(exact.mean()) if len(exact) else None, self.metric, exact, figures)

    def against(self, preds, reference) -> Score:
        s = self.score(preds, reference)
        return Score(s.value, "word agreement", s.per_sample, s.figures)

    def read_labels(self, folder, files):
        found = read_tsv(folder, LABEL_FILES)
        if found is None:
            return None
        path, table = found
        return match_files(path, table, Path(folder), files)

    def metadata_props(self) -> dict[str, str]:
        """The task, and the dictionary under PaddleOCR's own key `character` (blank and space left out)."""
        chars = self.table[1:-1] if self.table[-1] == " " and len(self.table) > 2 else self.table[1:]
        return super().metadata_props() | {"character": "\n".join(chars)}

    def records(self, preds, files):
        return [{"file": str(f), **p} for p, f in zip(preds, files)]
