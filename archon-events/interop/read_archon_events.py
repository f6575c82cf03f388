"""Reads the events archon-events wrote (HTTP binary + structured, Kafka, RabbitMQ, AMQP 1.0) with the
Python SDK's bindings and checks every attribute.

Usage: python3 read_archon_events.py DIR
"""
import json, sys, os
from cloudevents.core.formats.json import JSONFormat
import cloudevents.core.bindings.kafka as kafka, cloudevents.core.bindings.rabbitmq as rabbit, cloudevents.core.bindings.amqp as amqp
d = sys.argv[1]
def check(name, ev, get):
    assert get("type") == "com.example.rs.v1", name
    assert get("source") == "/rust"
    assert get("subject") == "order 42 é", get("subject")
    assert get("partitionkey") == "customer-7"
    assert get("correlationid") == "c-1"
    assert get("traceparent").startswith("00-")
    print(name, "OK", get("id"), get("time"))
import cloudevents.core.bindings.http as http
for name in ["rs_binary.json", "rs_structured.json"]:
    m = json.load(open(os.path.join(d, name)))
    ev = http.from_http(http.HTTPMessage(m["headers"], m["body"].encode()), JSONFormat())
    check(name, ev, lambda k: ev.get_attributes()[k])
    assert ev.get_data() == {"total": 12}, ev.get_data()
m = json.load(open(os.path.join(d, "rs_kafka.json")))
ev = kafka.from_binary(kafka.KafkaMessage({k: v.encode() for k, v in m["headers"].items()}, None, m["body"].encode()), JSONFormat())
check("rs_kafka.json", ev, lambda k: ev.get_attributes()[k]); print("  data", ev.get_data())
m = json.load(open(os.path.join(d, "rs_rabbitmq.json")))
ev = rabbit.from_binary(rabbit.RabbitMQMessage(m["headers"], m["content_type"], m["body"].encode()), JSONFormat())
check("rs_rabbitmq.json", ev, lambda k: ev.get_attributes()[k]); print("  data", ev.get_data())
m = json.load(open(os.path.join(d, "rs_amqp.json")))
ev = amqp.from_binary(amqp.AMQPMessage({"content-type": m["content_type"]}, m["headers"], m["body"].encode()), JSONFormat())
check("rs_amqp.json", ev, lambda k: ev.get_attributes()[k]); print("  data", ev.get_data())
