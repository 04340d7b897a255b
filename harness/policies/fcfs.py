"""``fcfs``: plain vLLM with prefix caching on (vLLM's default): the seed's baseline.

Nothing is added to the server command: the shared scheduler settings (max batched tokens,
max sequences, GPU memory fraction, CPU KV space) come from the engine config and are equal
across policies, so a difference in JCT is the policy's.
"""

from harness.policies.base import Policy, register


@register
class Fcfs(Policy):
    name = "fcfs"
