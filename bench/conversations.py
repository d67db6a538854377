"""Realistic multi-turn conversations: each client holds one, a user turn at a time."""
CONVERSATIONS = [
    ["I'm learning Python. What is a list comprehension?", "Show me one that keeps only even numbers."],
    ["What is the difference between a process and a thread?", "Which one should a web server use?"],
    ["Write a function that checks whether a string is a palindrome.", "Now make it ignore spaces and case."],
    ["Explain what an HTTP status code 404 means.", "And what does 503 mean?"],
    ["How do I read a CSV file in Python?", "How would I skip the header row?"],
    ["What is a hash map and why is lookup fast?", "What happens when two keys collide?"],
    ["Give me three tips for writing clear commit messages.", "Write an example message for a bug fix."],
    ["What does the SQL JOIN keyword do?", "What is the difference between LEFT JOIN and INNER JOIN?"],
]


def _document():
    """A made-up technical document of about 3,400 tokens (the packaged model's tokenizer): a
    person pastes it and then asks about it."""
    parts = ["# Operations handbook of the Larkspur ingest service\n"]
    for n in range(1, 20):
        parts.append(
            f"\n## Section {n}: stage {n} of the pipeline\n"
            f"Stage {n} reads batches from queue q{n} and writes them to table t{n}. Its batch size is "
            f"{n * 64} records and it retries a failed batch {n % 4 + 1} times, waiting {n * 3} seconds "
            f"between tries. When the queue holds more than {n * 1000} records the stage scales out to "
            f"{n % 5 + 2} workers. The owner of stage {n} is team {['Aster', 'Birch', 'Cedar', 'Dahlia'][n % 4]}, "
            f"reachable on channel #stage-{n}. Known issue: under heavy load stage {n} may reorder records "
            f"that share a key; consumers must sort by the sequence number. The alert fires when the lag "
            f"exceeds {n * 5} minutes, and the runbook says to check the disk of host ingest-{n:02d} first, "
            f"then the network, then restart the stage with `larkspur restart --stage {n}`.\n")
    return "".join(parts)


DOCUMENT = _document()
# The document conversation: the document with a first question, then four short follow-ups.
DOCUMENT_QUESTIONS = [
    f"Here is our handbook:\n\n{DOCUMENT}\n\nWhich team owns stage 7?",
    "What is its batch size?",
    "When does its alert fire?",
    "Which host should I check first?",
    "How do I restart it?",
]
