"""The per-socket frame rate limit: a token bucket (CHAT_SOCKET_FRAMES_PER_SECOND, with a burst of
CHAT_SOCKET_FRAME_BURST). A socket that goes on sending while refused is a flood: after
CHAT_SOCKET_FLOOD_FRAMES refusals before its bucket is full again the consumer closes it (4429).
(Counting only refusals in a row would miss a flood that lets a frame through now and then.)"""
import math
import time


class FrameBucket:
    def __init__(self, rate, burst, clock=time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens, self.at = float(burst), clock()
        self.refused = 0  # since the bucket was last full

    def take(self):
        """0 when a frame may go through now, else the whole seconds until one may."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= self.burst:
            self.refused = 0  # quiet long enough: what came before was no flood
        if self.tokens >= 1:
            self.tokens -= 1
            return 0
        self.refused += 1
        return max(1, math.ceil((1 - self.tokens) / self.rate))
