"""One cell of a sweep: the vLLM server for a policy, the async agent client, the records."""
