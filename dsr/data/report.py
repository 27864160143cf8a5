"""What an importer did: how much it kept and what it skipped, with reasons."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class PrepareReport:
    """Outcome of preparing one split of one corpus.

    ``skipped`` holds ``(utterance id or file, reason)`` pairs so that nothing is
    lost silently: every dropped utterance is named here and in the log.
    """

    corpus: str
    split: str
    kept: int = 0
    duration_s: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    # Kept but suspicious (e.g. near-silent audio): ``(utterance id, reason)``.
    warned: list[tuple[str, str]] = field(default_factory=list)

    def skip(self, item: str, reason: str) -> None:
        """Record that ``item`` was dropped because of ``reason``."""
        self.skipped.append((item, reason))

    def reason_counts(self) -> dict[str, int]:
        """Number of skipped items per reason kind (the text before the first ':')."""
        return dict(Counter(reason.split(":", 1)[0] for _, reason in self.skipped))

    def summary(self) -> str:
        """One line for logs and the CLI, e.g. ``fsdd/train: kept 1500 (12.3 min), skipped 2 (...)``."""
        line = f"{self.corpus}/{self.split}: kept {self.kept} utterances ({self.duration_s / 60:.1f} min)"
        if not self.skipped:
            line += ", skipped 0"
        else:
            kinds = ", ".join(f"{kind}: {n}" for kind, n in sorted(self.reason_counts().items()))
            line += f", skipped {len(self.skipped)} ({kinds})"
        if self.warned:
            kinds = ", ".join(
                f"{k}: {n}" for k, n in sorted(Counter(r.split(":", 1)[0] for _, r in self.warned).items())
            )
            line += f"; {len(self.warned)} kept with a warning ({kinds})"
        return line

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form, e.g. for :func:`dsr.utils.mark_done` info."""
        d = asdict(self)
        d["skipped"] = [list(pair) for pair in self.skipped]
        d["warned"] = [list(pair) for pair in self.warned]
        return d
