"""The one error of this package (workloads imports neither harness nor launch: planning
turns it into its ConfigError, so bad workload input is refused before anything runs)."""


class WorkloadError(ValueError):
    """A workload config or file that cannot make jobs; the message is one line naming the key
    (``workload.n_jobs=0: ...``) and, for a kind, the allowed values."""
