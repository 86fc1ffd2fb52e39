#include "common/rpc/client_message.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/message.h>
#include <google/protobuf/wire_format_lite.h>
#include <grpcpp/support/byte_buffer.h>

#include <vector>

#include "absl/strings/str_cat.h"

namespace epserve::rpc {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::internal::WireFormatLite;

std::optional<std::string> FindIn(const Descriptor& type, absl::string_view bytes,
                                  const std::string& prefix, int depth) {
  if (depth > 32) return std::nullopt;
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                                            static_cast<int>(bytes.size()));
  std::vector<int> seen(static_cast<size_t>(type.field_count()), 0);  // repeated indices
  while (true) {
    const uint32_t tag = in.ReadTag();
    if (tag == 0) return std::nullopt;
    const int number = static_cast<int>(WireFormatLite::GetTagFieldNumber(tag));
    const FieldDescriptor* field = type.FindFieldByNumber(number);
    if (field == nullptr ||
        WireFormatLite::GetTagWireType(tag) != WireFormatLite::WIRETYPE_LENGTH_DELIMITED ||
        (field->type() != FieldDescriptor::TYPE_STRING &&
         field->type() != FieldDescriptor::TYPE_MESSAGE)) {
      if (!WireFormatLite::SkipField(&in, tag)) return std::nullopt;
      continue;
    }
    uint32_t length = 0;
    std::string value;
    if (!in.ReadVarint32(&length) || !in.ReadString(&value, static_cast<int>(length))) {
      return std::nullopt;
    }
    std::string path = absl::StrCat(prefix, field->name());
    if (field->is_repeated()) {
      absl::StrAppend(&path, "[", seen[static_cast<size_t>(field->index())]++, "]");
    }
    if (field->type() == FieldDescriptor::TYPE_STRING) {
      if (!IsValidUtf8(value)) return path;
    } else if (auto inner = FindIn(*field->message_type(), value, path + ".", depth + 1)) {
      return inner;
    }
  }
}

}  // namespace

bool IsValidUtf8(absl::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len = 0;
    uint32_t cp = 0;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;  // a continuation byte, an overlong lead (C0, C1) or F5..FF
    }
    if (i + static_cast<size_t>(len) > n) return false;
    for (int k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + static_cast<size_t>(k)]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += static_cast<size_t>(len);
  }
  return true;
}

std::optional<std::string> FindInvalidUtf8(const Descriptor& type, absl::string_view bytes) {
  return FindIn(type, bytes, "", 0);
}

absl::Status ParseClientMessage(absl::string_view bytes, google::protobuf::Message* out) {
  if (out->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::OkStatus();
  }
  out->Clear();
  if (std::optional<std::string> field = FindInvalidUtf8(*out->GetDescriptor(), bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat(*field,
                     ": not valid UTF-8 (string fields carry UTF-8 text; send token ids "
                     "for anything else)"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("the request is not a valid ", out->GetDescriptor()->full_name(), " message"));
}

absl::Status ParseClientMessage(const grpc::ByteBuffer& buffer, google::protobuf::Message* out) {
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) {
    return absl::InvalidArgumentError("the request could not be read");
  }
  std::string bytes;
  bytes.reserve(buffer.Length());
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return ParseClientMessage(bytes, out);
}

void SerializeToByteBuffer(const google::protobuf::Message& message, grpc::ByteBuffer* out) {
  std::string bytes = message.SerializeAsString();
  grpc::Slice slice(bytes);
  *out = grpc::ByteBuffer(&slice, 1);
}

}  // namespace epserve::rpc
