"""Produce records to Kafka in transactions, committed or aborted, with librdkafka
(Debian's python3-confluent-kafka): the reference transactional producer for
tests/consumer_transactions.rs.

argv: broker, topic, partitions. stdin, one record a line, tab-separated:
  "<transaction> commit|abort", key, value  -- consecutive lines of one transaction
  "plain", key, value                       -- a non-transactional record, sent at once
  "hold", -, -                              -- the transaction under way is sent, left
                                               open; "holding" is printed, and the next
                                               line awaited before going on
The topic is created first. Prints "done" when every transaction has ended.
"""
import sys

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

broker, topic, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3])
admin = AdminClient({"bootstrap.servers": broker})  # kept: the result needs its handle
admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)
# The Java client's partitioner, as checksite's producer and the consumer's tests use.
common = {"bootstrap.servers": broker, "partitioner": "murmur2_random"}
transactional = Producer(dict(common, **{"transactional.id": "checksite-test-" + topic}))
plain = Producer(common)
transactional.init_transactions(30)

current, decision = None, None


def end():
    if current is None:
        return
    transactional.flush(30)
    if decision == "commit":
        transactional.commit_transaction(30)
    else:
        transactional.abort_transaction(30)


for line in sys.stdin:
    kind, key, value = line.rstrip("\n").split("\t", 2)
    if kind == "hold":
        transactional.flush(30)
        print("holding", flush=True)
        sys.stdin.readline()
        continue
    if kind == "plain":
        plain.produce(topic, key=key, value=value)
        plain.flush(30)
        continue
    number, this_decision = kind.split()
    if number != current:
        end()
        transactional.begin_transaction()
        current, decision = number, this_decision
    transactional.produce(topic, key=key, value=value)
end()
print("done")
