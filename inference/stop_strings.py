"""Stop strings, matched across token boundaries: text is never streamed past a stop.

The reply's text arrives in pieces (one per token, or none while a character is incomplete). The
matcher holds back the end of the text that could still be the start of a stop string, and
releases it as soon as it cannot; when a stop string appears, the text before it is the last
that is released, and the reply ends there (the stop string itself is not part of the reply, as
in OpenAI's API).
"""


class StopStrings:
    def __init__(self, stops):
        self.stops = tuple(stops)
        self.held = ""
        self.stopped = False

    def feed(self, piece):
        """The text that may be streamed now, given the next piece of the reply."""
        if self.stopped:
            return ""
        text = self.held + piece
        found = [at for at in (text.find(stop) for stop in self.stops) if at >= 0]
        if found:
            self.stopped, self.held = True, ""
            return text[: min(found)]
        keep = partial_length(text, self.stops)
        self.held = text[len(text) - keep:] if keep else ""
        return text[: len(text) - keep]

    def flush(self):
        """The held-back text, once the reply has ended without reaching a stop string."""
        held, self.held = self.held, ""
        return "" if self.stopped else held


def partial_length(text, stops):
    """The length of the longest end of `text` that is a proper beginning of one of `stops`: what a
    streamed reply must hold back until the next piece tells whether a stop (or a tag) follows."""
    longest = 0
    for stop in stops:
        for length in range(min(len(stop) - 1, len(text)), longest, -1):
            if stop.startswith(text[len(text) - length:]):
                longest = length
                break
    return longest
