#!/bin/bash
# kafka-run-class.sh CLASS [ARGS]: runs a Kafka main class on the jars in
# /opt/kafka/libs, as the script of the same name in the Kafka distribution.
set -e
exec java ${KAFKA_HEAP_OPTS:--Xmx256m} ${KAFKA_OPTS:-} -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="${KAFKA_LOG4J_CONFIG:-/etc/kafka/docker/tools-log4j2.yaml}" \
    -cp '/opt/kafka/libs/*' "$@"
