#include "router/frontend/output_processor.h"

#include <utility>

namespace epserve::frontend {

OutputProcessor::OutputProcessor(std::string request_id, const v1::SamplingParams& sampling,
                                 const tokenizer::Tokenizer* tokenizer)
    : request_id_(std::move(request_id)) {
  if (tokenizer == nullptr) return;
  tokenizer::StreamingOptions so;
  so.skip_special_tokens = !sampling.has_skip_special_tokens() || sampling.skip_special_tokens();
  so.stop_strings.assign(sampling.stop().begin(), sampling.stop().end());
  so.include_stop_str_in_output = sampling.include_stop_str_in_output();
  stop_strings_ = so.stop_strings;
  detok_ = std::make_unique<tokenizer::StreamingDetokenizer>(*tokenizer, std::move(so));
}

TokenOutput OutputProcessor::OnToken(uint32_t token_id,
                                     std::optional<v1::FinishReason> scheduler_finish,
                                     const v1::TokenLogprob* logprob) {
  TokenOutput out;
  out.response.set_request_id(request_id_);
  v1::GenerateChunk* chunk = out.response.mutable_chunk();
  chunk->add_token_ids(token_id);
  if (logprob != nullptr) *chunk->add_logprobs() = *logprob;
  std::optional<std::string> stop_str;
  if (detok_ != nullptr) {
    absl::StatusOr<tokenizer::Delta> d = detok_->Append(static_cast<int32_t>(token_id));
    if (d.ok()) {
      chunk->set_text(std::move(d->text));
      if (d->matched_stop) {
        out.finish_reason = v1::FINISH_REASON_STOP;
        out.stopped_by_string = true;
        stop_str = stop_strings_[static_cast<size_t>(d->stop_index)];
      }
    }
    // An id the tokenizer does not know (a padded vocabulary row) has no
    // text; the token id is still returned.
  }
  if (!out.finish_reason) out.finish_reason = scheduler_finish;
  if (!out.finish_reason) return out;
  if (!stop_str && detok_ != nullptr && !detok_->finished()) {
    absl::StatusOr<tokenizer::Delta> d = detok_->Finish();
    if (d.ok()) chunk->mutable_text()->append(d->text);
  }
  // The complete message carries what stopped the request.
  if (stop_str) {
    matched_stop_str_ = std::move(stop_str);
  } else if (*out.finish_reason == v1::FINISH_REASON_STOP) {
    matched_stop_token_ = token_id;
  }
  return out;
}

std::vector<v1::GenerateResponse> OutputProcessor::Complete(v1::FinishReason reason,
                                                            size_t num_prompt_tokens,
                                                            absl::Span<const uint32_t> output_ids) {
  std::vector<v1::GenerateResponse> out;
  if (detok_ != nullptr && !detok_->finished()) {
    absl::StatusOr<tokenizer::Delta> d = detok_->Finish();
    if (d.ok() && !d->text.empty()) {
      v1::GenerateResponse chunk;
      chunk.set_request_id(request_id_);
      chunk.mutable_chunk()->set_text(std::move(d->text));
      out.push_back(std::move(chunk));
    }
  }
  v1::GenerateResponse done;
  done.set_request_id(request_id_);
  v1::GenerateComplete* c = done.mutable_complete();
  c->set_finish_reason(reason);
  if (matched_stop_str_) c->set_stop_str(*matched_stop_str_);
  if (matched_stop_token_) c->set_stop_token_id(*matched_stop_token_);
  c->mutable_usage()->set_prompt_tokens(static_cast<uint32_t>(num_prompt_tokens));
  c->mutable_usage()->set_completion_tokens(static_cast<uint32_t>(output_ids.size()));
  *c->mutable_output_ids() = {output_ids.begin(), output_ids.end()};
  out.push_back(std::move(done));
  return out;
}

}  // namespace epserve::frontend
