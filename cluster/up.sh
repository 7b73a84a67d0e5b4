#!/usr/bin/env bash
# Start the three-node loopback cluster (cluster/node{1,2,3}.toml), wait until a leader is
# elected, and print the endpoints. Logs and pid files go to cluster/run/.
# Usage: cluster/up.sh            (builds quotad and quotactl in release mode first)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin quotad --bin quotactl
mkdir -p cluster/run cluster/data
# An admin access key for the AWS-compatible API ([aws_api] in the node configs), made once.
keys=cluster/run/aws-access-keys.csv
if [ ! -f "$keys" ]; then
    umask 077
    akid="AKIDLOCAL$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F)"
    secret=$(od -An -N30 -tx1 /dev/urandom | tr -d ' \n')
    printf 'Access key ID,Secret access key\n%s,%s\n' "$akid" "$secret" >"$keys"
    umask 022
fi
for i in 1 2 3; do
    pidfile=cluster/run/node$i.pid
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        echo "node $i already running (pid $(cat "$pidfile"))"
        continue
    fi
    nohup target/release/quotad --config cluster/node$i.toml >cluster/run/node$i.log 2>&1 &
    echo $! >"$pidfile"
done
endpoints="http://127.0.0.1:7101,http://127.0.0.1:7102,http://127.0.0.1:7103"
for _ in $(seq 1 100); do
    if leader=$(target/release/quotactl --endpoints "$endpoints" cluster status --json 2>/dev/null \
        | grep -o '"leader_id": *[1-9][0-9]*' | grep -o '[0-9]*$'); then
        echo "cluster up; leader is node $leader"
        echo "endpoints: $endpoints"
        echo "try: target/release/quotactl --endpoints $endpoints cluster status"
        echo "AWS API Gateway-compatible API: http://127.0.0.1:7181 (and :7182, :7183), signed with the key in $keys:"
        echo "  export AWS_ACCESS_KEY_ID=\$(tail -1 $keys | cut -d, -f1) AWS_SECRET_ACCESS_KEY=\$(tail -1 $keys | cut -d, -f2) AWS_DEFAULT_REGION=us-east-1"
        echo "  aws apigateway get-usage-plans --endpoint-url http://127.0.0.1:7181"
        exit 0
    fi
    sleep 0.2
done
echo "no leader after 20 s; see cluster/run/node*.log" >&2
exit 1
