"""A small labelled set for retrieval quality: documents, and questions with the passage
that answers each (a phrase found only in the answering chunk). Used by the recall test
and by bench/bench_knowledge.py."""

from __future__ import annotations

DOCUMENTS: dict[str, str] = {
    "refunds.md": """# Refunds and returns

Customers may ask for a refund within 30 days of delivery. The refund goes back to the
original payment method within five business days once the returned item is inspected.

Digital licences cannot be returned after activation; a faulty licence key is replaced
free of charge by the support team.

Shipping costs of a return are paid by the customer unless the item arrived damaged, in
which case we send a prepaid return label.""",
    "security.md": """# Security practices

All laptops use full-disk encryption and lock after five minutes of inactivity.

Passwords are stored with argon2id and every employee account requires two-factor
authentication with a hardware key or an authenticator app.

Security incidents are reported to the on-call engineer through the incident channel
within one hour of discovery; customers are notified within 72 hours when their data is
affected.""",
    "onboarding.md": """# Onboarding new employees

On the first day a new hire receives a laptop, a badge for the office doors and access to
the company wiki.

Each new employee is paired with a buddy from another team for the first month, who
answers questions about tools and habits.

Payroll details must be sent to the accounting team before the 20th of the month to be
included in that month's salary run.""",
    "travel.md": """# Travel and expenses

Train travel is preferred for trips under four hours; flights need approval from a
manager before booking.

Hotel nights are reimbursed up to 150 euros in most cities and 220 euros in London, Paris
and New York.

Expense reports with receipts are filed in the expenses tool within 30 days of the trip;
meals are covered up to 45 euros a day.""",
    "product.md": """# Product: the Switchboard gateway

The gateway exposes one GraphQL schema in front of AI, email, payments and messaging
providers.

Webhooks from vendors are verified with the vendor's signature scheme and processed
exactly once per event id.

Rate limits apply per tenant and per API key; a client that exceeds them receives a
RATE_LIMITED error with a retryAfter hint.""",
    "office.md": """# Office life

The office opens at 7:30 and closes at 20:00 on weekdays; the building is closed on
weekends.

Lunch is served in the canteen between 12:00 and 14:00, with a vegetarian option every
day.

Bicycles can be parked in the basement garage, which has showers and lockers for cyclists.""",
}


def _filler(topic: str, n: int) -> str:
    """Paragraphs of the same document that answer none of the questions (so a document
    spans several chunks and retrieval must find the right one)."""
    return "\n\n".join(
        f"Note {i} on {topic}: this part of the guide records routine details that the team "
        f"keeps for reference; it changes rarely and is reviewed once a year by its owner."
        for i in range(1, n + 1)
    )


DOCUMENTS = {
    name: text.replace("\n\n", f"\n\n{_filler(name.split('.')[0], 3)}\n\n", 1)
    + "\n\n"
    + _filler(name.split(".")[0], 4)
    for name, text in DOCUMENTS.items()
}

# (question, a phrase of the chunk that answers it)
QUESTIONS: list[tuple[str, str]] = [
    ("How long do customers have to ask for a refund?", "within 30 days of delivery"),
    ("Who pays shipping when an item is returned?", "Shipping costs of a return"),
    ("What happens with a faulty licence key?", "faulty licence key is replaced"),
    ("How are passwords stored?", "argon2id"),
    ("When are customers told about a security incident affecting them?", "within 72 hours"),
    ("Does a new hire get a buddy?", "paired with a buddy"),
    ("When must payroll details reach accounting?", "before the 20th"),
    ("How much is reimbursed for a hotel night in London?", "220 euros in London"),
    ("Do flights need approval?", "flights need approval"),
    ("What is the daily meal allowance on a trip?", "45 euros a day"),
    ("How are vendor webhooks verified?", "verified with the vendor's signature"),
    ("What error does a client get when it exceeds the rate limit?", "RATE_LIMITED"),
    ("When does the office open?", "opens at 7:30"),
    ("Where can I park my bicycle?", "Bicycles can be parked"),
    ("Is there vegetarian food at lunch?", "vegetarian option"),
]


def recall_at(hits: list[list[str]], k: int = 5) -> float:
    """Share of questions whose answering phrase is in one of their first `k` chunks."""
    found = sum(
        1
        for (_, phrase), texts in zip(QUESTIONS, hits, strict=True)
        if any(phrase in text for text in texts[:k])
    )
    return found / len(QUESTIONS)
