#!/bin/sh
# make_tls.sh - writes the certificates that tests/test_tls.c and tests/test_e2e.c use into
# tests/ref/tls/. TEST-ONLY: their private keys are public (committed to this repository); never
# use them for a real cluster. The tests read the committed files and do not need the openssl CLI.
#   ca.pem            a small CA ("ps test CA")
#   server.pem/.key   a server certificate signed by it, SAN IP:127.0.0.1 and DNS:localhost
#   other_ca.pem      a second, unrelated CA: clients that trust only it must refuse the server
# All valid for 100 years. EC P-256 keys (fast handshakes).
set -eu
cd "$(dirname "$0")"
mkdir -p tls
cd tls
days=36500
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ca() { # NAME SUBJECT: a self-signed CA
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 -days $days \
        -subj "$2" -keyout "$tmp/$1.key" -out "$1.pem" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}
ca ca "/CN=ps test CA"
ca other_ca "/CN=ps unrelated test CA"

openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
    -subj "/CN=ps test server" -keyout server.key -out "$tmp/server.csr" 2>/dev/null
cat > "$tmp/server.ext" <<'EXT'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
EXT
openssl x509 -req -sha256 -days $days -in "$tmp/server.csr" -CA ca.pem -CAkey "$tmp/ca.key" \
    -set_serial 2 -extfile "$tmp/server.ext" -out server.pem 2>/dev/null
chmod 644 server.key
openssl verify -CAfile ca.pem server.pem
