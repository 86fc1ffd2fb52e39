#!/usr/bin/env bash
# Writes the TLS test fixtures (tests/fixtures/tls): a cluster CA, a server
# certificate for 127.0.0.1 / localhost, a client certificate, and a client
# certificate of another CA (which the servers must refuse). Test material
# only: the keys are public. Valid for 100 years. Needs openssl.
set -euo pipefail
out="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/fixtures/tls}"
mkdir -p "$out"
cd "$out"
days=36500
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
ca() {  # name subject
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days "$days" \
    -subj "/CN=$2" -keyout "$1.key" -out "$1.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
}
leaf() {  # name subject ca extensions
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$2" \
    -keyout "$1.key" -out "$tmp/$1.csr" 2>/dev/null
  printf '%s\n' "$4" > "$tmp/$1.ext"
  openssl x509 -req -in "$tmp/$1.csr" -CA "$3.pem" -CAkey "$3.key" -CAcreateserial \
    -CAserial "$tmp/$3.srl" -days "$days" -extfile "$tmp/$1.ext" -out "$1.pem" 2>/dev/null
}
ca ca "epserve test CA"
ca other_ca "another CA"
leaf server "epserve router" ca \
  "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth,clientAuth"
leaf client "epserve worker" ca "extendedKeyUsage=clientAuth"
leaf other_client "rogue worker" other_ca "extendedKeyUsage=clientAuth"
rm -f other_ca.key ca.key ca.srl
chmod 600 ./*.key
echo "wrote $out: $(ls | tr '\n' ' ')"
