"""Writes CloudEvents made by the Python SDK (pip install cloudevents) for archon-events to read.

Usage: python3 write_python_events.py DIR
"""
import json, sys, os
from cloudevents.v1.http import CloudEvent, to_binary, to_structured
d = sys.argv[1]
ev = CloudEvent({"type": "com.example.py.v1", "source": "/python", "subject": "s-1",
                 "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                 "correlationid": "corr-9", "datacontenttype": "application/json"}, {"hello": "wörld"})
h, b = to_binary(ev)
json.dump({"headers": dict(h), "body": b.decode()}, open(os.path.join(d, "py_binary.json"), "w"))
h, b = to_structured(ev)
json.dump({"headers": dict(h), "body": b.decode()}, open(os.path.join(d, "py_structured.json"), "w"))
json.dump({"id": ev["id"], "time": ev["time"]}, open(os.path.join(d, "py_expected.json"), "w"))
