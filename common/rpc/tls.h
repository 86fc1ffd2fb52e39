// TLS for gRPC listeners and channels, from PEM files named by flags.
//
//   server: certificate + key; with a client CA every client must present a
//           certificate that CA signed (mutual TLS).
//   client: the CA that signed the server's certificate; certificate + key
//           when the server asks for a client certificate.
//
// No files: plaintext (InsecureServerCredentials / InsecureChannelCredentials).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace grpc {
class ChannelCredentials;
class ServerCredentials;
}  // namespace grpc

namespace epserve::rpc {

struct TlsFiles {
  std::string cert;  // PEM certificate chain
  std::string key;   // PEM private key
  std::string ca;    // PEM CA: the server's client CA, or the client's trusted roots
  bool empty() const { return cert.empty() && key.empty() && ca.empty(); }
};

// `flags` names the flags in errors, e.g. "--tls" makes "--tls-cert". A
// server needs cert and key (ca optional: mutual TLS); errors name the flag
// and the file.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& files, absl::string_view flags);
// A client needs the ca to use TLS; cert and key go together.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const TlsFiles& files, absl::string_view flags);

}  // namespace epserve::rpc
