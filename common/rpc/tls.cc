#include "common/rpc/tls.h"

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace epserve::rpc {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, absl::string_view flag,
                                    absl::string_view what) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(flag, ": cannot read '", path, "'"));
  std::stringstream buf;
  buf << in.rdbuf();
  std::string pem = buf.str();
  if (!absl::StrContains(pem, absl::StrCat("-----BEGIN ", what))) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": '", path, "' holds no PEM ", what, " block"));
  }
  return pem;
}

absl::Status CertAndKeyTogether(const TlsFiles& files, absl::string_view flags) {
  if (files.cert.empty() != files.key.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(flags, "-cert and ", flags, "-key go together (give both or neither)"));
  }
  return absl::OkStatus();
}

struct KeyCertPair {
  std::string key;
  std::string cert;
};

// The PEM certificate chain and private key of `files` (both set).
absl::StatusOr<KeyCertPair> ReadKeyCertPair(const TlsFiles& files, absl::string_view flags) {
  const std::string key_flag = absl::StrCat(flags, "-key");
  absl::StatusOr<std::string> cert =
      ReadPem(files.cert, absl::StrCat(flags, "-cert"), "CERTIFICATE");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPem(files.key, key_flag, "");
  if (!key.ok()) return key.status();
  if (!absl::StrContains(*key, "PRIVATE KEY-----")) {
    return absl::InvalidArgumentError(
        absl::StrCat(key_flag, ": '", files.key, "' holds no PEM private key"));
  }
  return KeyCertPair{std::move(*key), std::move(*cert)};
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& files, absl::string_view flags) {
  if (files.empty()) return grpc::InsecureServerCredentials();
  if (absl::Status s = CertAndKeyTogether(files, flags); !s.ok()) return s;
  if (files.cert.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(flags, "-client-ca needs ", flags, "-cert and ", flags, "-key"));
  }
  absl::StatusOr<KeyCertPair> pair = ReadKeyCertPair(files, flags);
  if (!pair.ok()) return pair.status();
  grpc::SslServerCredentialsOptions options(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  if (!files.ca.empty()) {
    absl::StatusOr<std::string> ca =
        ReadPem(files.ca, absl::StrCat(flags, "-client-ca"), "CERTIFICATE");
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *ca;
    options.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  options.pem_key_cert_pairs.push_back({pair->key, pair->cert});
  return grpc::SslServerCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const TlsFiles& files, absl::string_view flags) {
  if (files.empty()) return grpc::InsecureChannelCredentials();
  if (absl::Status s = CertAndKeyTogether(files, flags); !s.ok()) return s;
  if (files.ca.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(flags, "-ca is needed for TLS (the CA that signed the server's certificate)"));
  }
  grpc::SslCredentialsOptions options;
  absl::StatusOr<std::string> ca = ReadPem(files.ca, absl::StrCat(flags, "-ca"), "CERTIFICATE");
  if (!ca.ok()) return ca.status();
  options.pem_root_certs = *ca;
  if (!files.cert.empty()) {
    absl::StatusOr<KeyCertPair> pair = ReadKeyCertPair(files, flags);
    if (!pair.ok()) return pair.status();
    options.pem_cert_chain = std::move(pair->cert);
    options.pem_private_key = std::move(pair->key);
  }
  return grpc::SslCredentials(options);
}

}  // namespace epserve::rpc
