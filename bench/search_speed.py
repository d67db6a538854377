"""How long one owner's search takes on a table of many users' messages (README "Operating it").

    python -m bench.search_speed [--rows 60000] [--users 6] [--database-url URL]

Builds a throwaway database (SQLite in a temporary folder unless --database-url names an empty
PostgreSQL database), fills it with generated conversations, and prints the median time of
chat.search.search for a few queries, twice: with every word a prefix, as before short words matched
whole words only ("before"), and as it is now ("now").
"""
import argparse
import os
import random
import statistics
import sys
import tempfile
import time

WORDS = ("python list tuple rebase merge branch commit quokka island perth apple banana cherry data model "
         "token reply socket server client queue worker redis sqlite index search prefix owner alpha beta "
         "gamma delta epsilon function class method value error stack trace a an the of to in is it").split()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="search-speed-")
    os.environ["DATABASE_URL"] = args.database_url or f"sqlite:///{folder}/db.sqlite3"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from chat import search
    from chat.models import Conversation, Message, Owner

    call_command("migrate", verbosity=0)
    rng = random.Random(7)
    owners = [Owner(guest_key=f"bench{n}") for n in range(args.users)]
    per_conversation = 20
    for owner in owners:
        for _ in range(args.rows // args.users // per_conversation):
            conversation = Conversation.objects.create(title=" ".join(rng.choices(WORDS, k=4)), **owner.fields())
            Message.objects.bulk_create([Message(conversation=conversation, role="user" if i % 2 == 0 else "assistant",
                                                 content=" ".join(rng.choices(WORDS, k=30)), finish_reason="stop")
                                         for i in range(per_conversation)])
    small = Owner(guest_key="bench-small")  # a user with 10 conversations among the large ones
    for _ in range(10):
        conversation = Conversation.objects.create(title="small", **small.fields())
        Message.objects.bulk_create([Message(conversation=conversation, role="user", content=" ".join(rng.choices(WORDS, k=30)))
                                     for _ in range(per_conversation)])
    print(f"{Message.objects.count()} messages of {args.users + 1} users on {connection.vendor}")
    shortest_prefix = search.MIN_PREFIX_CHARS
    print(f"{'':12} {'query':16} {'before':>10} {'now':>10}  results (before, now)")
    for label, owner in (("large user", owners[0]), ("small user", small)):
        for query in ("a", "p", "py", "pyt", "python", "quokka island", "zzz"):
            medians, counts = [], []
            for search.MIN_PREFIX_CHARS in (1, shortest_prefix):
                times = []
                for _ in range(7):
                    started = time.perf_counter()
                    found = search.search(owner, query)
                    times.append((time.perf_counter() - started) * 1000)
                medians.append(statistics.median(times))
                counts.append(len(found))
            print(f"{label:12} {query!r:16} {medians[0]:7.1f} ms {medians[1]:7.1f} ms  {counts[0]}, {counts[1]}")


if __name__ == "__main__":
    main()
