#include "common/rpc/client_message.h"

#include <gmock/gmock.h>
#include <grpcpp/support/byte_buffer.h>
#include <gtest/gtest.h>

#include "epserve/v1/epserve.pb.h"

namespace epserve::rpc {
namespace {

using ::testing::HasSubstr;

// Serialized `message` with the bytes of `placeholder` replaced by `bytes`
// (same length, so every length prefix stays right).
std::string WithBytes(const google::protobuf::Message& message, const std::string& placeholder,
                      const std::string& bytes) {
  EXPECT_EQ(placeholder.size(), bytes.size());
  std::string wire = message.SerializeAsString();
  const size_t at = wire.find(placeholder);
  EXPECT_NE(at, std::string::npos);
  wire.replace(at, placeholder.size(), bytes);
  return wire;
}

struct Utf8Case {
  const char* name;
  std::string bytes;
  bool valid;
};

const Utf8Case kUtf8Cases[] = {
    {"empty", "", true},
    {"ascii", "abc", true},
    {"two_bytes", "\xC3\xA9", true},
    {"three_bytes", "\xE2\x82\xAC", true},
    {"four_bytes", "\xF0\x9F\x98\x80", true},
    {"max_code_point", "\xF4\x8F\xBF\xBF", true},
    {"overlong_nul", "\xC0\x80", false},
    {"overlong_three", "\xE0\x80\xAF", false},
    {"surrogate", "\xED\xA0\x80", false},
    {"above_max", "\xF4\x90\x80\x80", false},
    {"lone_continuation", "\x80", false},
    {"truncated", "\xE2\x82", false},
    {"ff", "\xFF", false},
};

// The validator agrees with protobuf's own parse on every case.
TEST(IsValidUtf8, AgreesWithProtobuf) {
  for (const Utf8Case& c : kUtf8Cases) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(IsValidUtf8(c.bytes), c.valid);
    v1::TokenizeRequest req;
    const std::string placeholder(c.bytes.size(), 'x');
    req.set_text("<" + placeholder + ">");
    v1::TokenizeRequest parsed;
    EXPECT_EQ(parsed.ParseFromString(WithBytes(req, "<" + placeholder + ">", "<" + c.bytes + ">")),
              c.valid);
  }
}

TEST(ParseClientMessage, NamesTheFieldWithInvalidUtf8) {
  v1::GenerateRequest req;
  req.set_request_id("id-1");
  req.set_text("hello");
  req.mutable_sampling_params()->add_stop("ok");
  req.mutable_sampling_params()->add_stop("QQ");
  v1::GenerateRequest out;
  EXPECT_TRUE(ParseClientMessage(req.SerializeAsString(), &out).ok());
  EXPECT_EQ(out.sampling_params().stop(1), "QQ");

  absl::Status s = ParseClientMessage(WithBytes(req, "QQ", "\xC0\x80"), &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("sampling_params.stop[1]: not valid UTF-8"));
  EXPECT_EQ(out.ByteSizeLong(), 0u);  // nothing half-parsed

  s = ParseClientMessage(WithBytes(req, "hello", "hell\xFF"), &out);
  EXPECT_THAT(std::string(s.message()), HasSubstr("text: not valid UTF-8"));
  s = ParseClientMessage(WithBytes(req, "id-1", "id\xED\xA0"), &out);
  EXPECT_THAT(std::string(s.message()), HasSubstr("request_id: not valid UTF-8"));
}

TEST(ParseClientMessage, BytesThatAreNoMessageSaySo) {
  v1::GenerateRequest out;
  absl::Status s = ParseClientMessage(std::string("\xFF\xFF\xFF", 3), &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("the request is not a valid epserve.v1.GenerateRequest message"));
}

TEST(ParseClientMessage, ByteBufferRoundTrip) {
  v1::TokenizeRequest req;
  req.set_text(std::string(100000, 'a'));
  grpc::ByteBuffer buffer;
  SerializeToByteBuffer(req, &buffer);
  v1::TokenizeRequest out;
  ASSERT_TRUE(ParseClientMessage(buffer, &out).ok());
  EXPECT_EQ(out.text(), req.text());
}

}  // namespace
}  // namespace epserve::rpc
