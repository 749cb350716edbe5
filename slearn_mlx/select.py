"""Choose the records to train on from the diagnosis.

`unknown` is the SLearnLLM rule: train only on what the model answered wrongly.
`all` trains on every record of the training split, the baseline the method is compared with.
Held-out records are never selected. Each selected row says why it was kept.
"""

from .data import Record

POLICIES = ("unknown", "all")


def select_records(records: list[Record], diagnosis: list[dict], held_out: set[str], policy: str) -> list[dict]:
    """Rows {id, target, reason} for the records to train on, the reference answer as target."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
    correct = {row["id"]: row["correct"] for row in diagnosis}
    selected = []
    for record in records:
        if record.id in held_out:
            continue
        if policy == "unknown" and correct[record.id]:
            continue
        reason = "answered correctly; policy all" if correct[record.id] else "answered wrongly"
        selected.append({"id": record.id, "target": record.answer, "reason": reason})
    return selected
