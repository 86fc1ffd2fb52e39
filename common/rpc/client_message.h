// Parsing client requests by hand where gRPC's own parsing would hide the
// reason: a proto3 `string` field holding invalid UTF-8 fails protobuf's
// parse, and gRPC's callback API answers that with UNIMPLEMENTED and no
// message. Services that take client text receive the raw bytes instead
// (WithRawCallbackMethod_*) and parse them here, so the client hears
// INVALID_ARGUMENT naming the field ("sampling_params.stop[1]: not valid
// UTF-8").
#pragma once

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace google::protobuf {
class Descriptor;
class Message;
}  // namespace google::protobuf

namespace grpc {
class ByteBuffer;
}

namespace epserve::rpc {

// Parses `bytes` into `out`. OK, or INVALID_ARGUMENT naming the first string
// field (a path like "sampling_params.stop[1]") whose bytes are not UTF-8,
// or saying the bytes are not a `out`'s message type at all.
absl::Status ParseClientMessage(absl::string_view bytes, google::protobuf::Message* out);
absl::Status ParseClientMessage(const grpc::ByteBuffer& buffer, google::protobuf::Message* out);

// The path of the first string field of `bytes` (wire format of a message
// of type `type`) that is not valid UTF-8; nullopt if none (or if the bytes
// are not well-formed enough to tell).
std::optional<std::string> FindInvalidUtf8(const google::protobuf::Descriptor& type,
                                           absl::string_view bytes);

// Serializes `message` into `out` (a raw method's response).
void SerializeToByteBuffer(const google::protobuf::Message& message, grpc::ByteBuffer* out);

// RFC 3629 UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF
// (what protobuf accepts in a string field).
bool IsValidUtf8(absl::string_view s);

}  // namespace epserve::rpc
