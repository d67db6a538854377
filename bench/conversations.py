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
