"""Parses Prometheus text exposition from stdin with the reference parser
(prometheus_client) and prints every sample as JSON: {"name{l=v,...}": value}.
Fails (non-zero exit) on anything the parser rejects."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

samples = {}
types = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    types[family.name] = family.type
    for sample in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
        samples[f"{sample.name}{{{labels}}}"] = sample.value
print(json.dumps({"samples": samples, "types": types}))
