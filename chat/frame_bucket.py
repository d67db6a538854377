"""The per-socket frame rate limit: a token bucket (CHAT_SOCKET_FRAMES_PER_SECOND, with a burst of
CHAT_SOCKET_FRAME_BURST). A socket that goes on sending while refused is a flood: after
CHAT_SOCKET_FLOOD_FRAMES refusals in a row the consumer closes it (4429)."""
import math
import time


class FrameBucket:
    def __init__(self, rate, burst, clock=time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens, self.at = float(burst), clock()
        self.refused_in_a_row = 0

    def take(self):
        """0 when a frame may go through now, else the whole seconds until one may."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            self.refused_in_a_row = 0
            return 0
        self.refused_in_a_row += 1
        return max(1, math.ceil((1 - self.tokens) / self.rate))
