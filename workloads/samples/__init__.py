"""Sample traces in the LMCache agentic and TraceLab formats, written by us
(``make_samples.py``; docs/workloads.md)."""
