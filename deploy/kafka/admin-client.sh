#!/bin/sh
# Prints the client properties of the `admin` principal (SASL/PLAIN, the broker's own and only
# super user) for the Kafka tools' --command-config:
#   sh /etc/carbon/kafka/admin-client.sh > /tmp/admin.properties
# The password comes from CARBON_KAFKA_PASSWORD_ADMIN (hex or another value without quotes).
set -eu
: "${CARBON_KAFKA_PASSWORD_ADMIN:?set CARBON_KAFKA_PASSWORD_ADMIN}"
cat <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="${CARBON_KAFKA_PASSWORD_ADMIN}";
PROPERTIES
