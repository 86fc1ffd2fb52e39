// The official OpenAI Node client against epserve's HTTP API (started by
// openai_client_test.sh). Every check throws on failure; exit code 0 only
// when all passed.
'use strict';
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const OpenAI = require('openai');

const base = process.env.EPSERVE_HTTP;
const model = process.env.EPSERVE_MODEL;
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: process.env.EPSERVE_API_KEY || 'none',
                            maxRetries: 0 });

async function metric(name) {
  const text = await (await fetch(`http://${process.env.EPSERVE_METRICS}/metrics`)).text();
  let total = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(name + '{') || line.startsWith(name + ' ')) {
      total += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
  }
  return total;
}

async function waitFor(check, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

// The gRPC API's output for the same request (the epserve CLI): ids, text.
function grpcOutput(prompt, maxTokens, temperature, seed) {
  const out = execFileSync(process.env.EPSERVE_CLI,
    ['generate', '--server', process.env.EPSERVE_GRPC, '--prompt', prompt, '--max-tokens',
     String(maxTokens), '--temperature', String(temperature), '--seed', String(seed), '--json'],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const lines = out.trim().split('\n').map((l) => JSON.parse(l));
  const text = lines.filter((l) => l.chunk).map((l) => l.chunk.text || '').join('');
  return { ids: lines.find((l) => l.complete).complete.output_ids, text };
}

const tests = {
  async models() {
    const list = await client.models.list();
    assert.equal(list.data.length, 1);
    assert.equal(list.data[0].id, model);
  },

  async completionMatchesTheGrpcApi() {
    for (const seed of [1, 2]) {
      const r = await client.completions.create({ model, prompt: 'Hello world', max_tokens: 6,
                                                  temperature: 0.8, seed, logprobs: 0 });
      assert.equal(r.object, 'text_completion');
      assert.equal(r.choices.length, 1);
      const c = r.choices[0];
      assert.ok(['stop', 'length'].includes(c.finish_reason));
      assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
      const grpc = grpcOutput('Hello world', 6, 0.8, seed);
      assert.equal(c.text, grpc.text, `seed ${seed}: the gRPC API's text`);
      assert.equal(c.logprobs.tokens.length, grpc.ids.length, 'one logprob per generated token');
      assert.equal(r.usage.completion_tokens, grpc.ids.length);
    }
  },

  async nChoicesLogprobsAndStop() {
    const r = await client.completions.create({ model, prompt: ['Hello', 'Once upon'], n: 2,
                                                max_tokens: 5, temperature: 0, ignore_eos: true,
                                                logprobs: 2 });
    assert.equal(r.choices.length, 4);
    r.choices.forEach((c, i) => {
      assert.equal(c.index, i);
      assert.equal(c.finish_reason, 'length');
      assert.equal(c.logprobs.tokens.length, 5);
      for (const alt of c.logprobs.top_logprobs) assert.ok(Object.keys(alt).length <= 2);
    });
    assert.equal(r.choices[0].text, r.choices[1].text, 'greedy: the same text for both of n');
    assert.equal(r.usage.completion_tokens, 20);
    // A stop string from the greedy text: the text ends before it.
    const full = (await client.completions.create({ model, prompt: 'Hello', max_tokens: 12,
                                                    temperature: 0, ignore_eos: true }))
      .choices[0].text;
    const stop = full.slice(4, 6);
    if (stop.length === 2 && !full.slice(0, 4).includes(stop)) {
      const s = await client.completions.create({ model, prompt: 'Hello', max_tokens: 12,
                                                  temperature: 0, ignore_eos: true, stop: [stop] });
      assert.equal(s.choices[0].finish_reason, 'stop');
      assert.equal(s.choices[0].text, full.slice(0, full.indexOf(stop)));
    }
  },

  async streamingEqualsNonStreamingWithUsage() {
    const args = { model, prompt: 'The quick brown fox', max_tokens: 10, temperature: 0,
                   ignore_eos: true };
    const whole = (await client.completions.create(args)).choices[0].text;
    const stream = await client.completions.create({ ...args, stream: true,
                                                     stream_options: { include_usage: true } });
    let text = '';
    let finish = null;
    let usage = null;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        text += c.text;
        if (c.finish_reason) finish = c.finish_reason;
      }
    }
    assert.equal(text, whole);
    assert.equal(finish, 'length');
    assert.ok(usage, 'a usage chunk');
    assert.equal(usage.completion_tokens, 10);
  },

  async errorsHaveOpenAisShape() {
    const cases = [
      [{ model, prompt: 'x', temperature: 'hot' }, 400, 'temperature'],
      [{ model, prompt: 'x', n: 0 }, 400, 'n'],
      [{ model: 'no-such-model', prompt: 'x' }, 404, 'model'],
      [{ model, prompt: [999999] }, 400, 'prompt'],
    ];
    for (const [body, status, param] of cases) {
      await assert.rejects(client.completions.create(body), (e) => {
        assert.equal(e.status, status, JSON.stringify(body));
        assert.equal(e.error.param, param);
        assert.ok(e.error.message.length > 0);
        return true;
      });
    }
    const chatCases = [
      [{ model, messages: [{ role: 'wizard', content: 'x' }] }, 'messages[0].role', 'unknown role'],
      [{ model, messages: [] }, 'messages', 'non-empty'],
      [{ model, messages: [{ role: 'user', content: 'x' }], top_logprobs: 2 }, 'top_logprobs',
       'needs logprobs'],
    ];
    for (const [body, param, text] of chatCases) {
      await assert.rejects(client.chat.completions.create(body), (e) => {
        assert.equal(e.status, 400, JSON.stringify(body));
        assert.equal(e.error.param, param);
        assert.ok(e.error.message.includes(text), e.error.message);
        return true;
      });
    }
  },

  // The tiny model's chat_template.jinja is Qwen3's: the chat answer equals a
  // completion of the prompt the template renders (ChatML).
  async chatEqualsTheCompletionOfItsRenderedPrompt() {
    const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hello' }];
    const rendered = '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello' +
                     '<|im_end|>\n<|im_start|>assistant\n';
    const args = { model, max_tokens: 6, temperature: 0, ignore_eos: true };
    const chat = await client.chat.completions.create({ ...args, messages, logprobs: true,
                                                        top_logprobs: 2 });
    assert.equal(chat.object, 'chat.completion');
    assert.match(chat.id, /^chatcmpl-/);
    const c = chat.choices[0];
    assert.equal(c.message.role, 'assistant');
    assert.equal(c.finish_reason, 'length');
    const same = await client.completions.create({ ...args, prompt: rendered });
    assert.equal(c.message.content, same.choices[0].text);
    assert.equal(chat.usage.prompt_tokens, same.usage.prompt_tokens);
    assert.equal(chat.usage.completion_tokens, 6);
    assert.equal(c.logprobs.content.length, 6);
    for (const t of c.logprobs.content) {
      assert.equal(typeof t.token, 'string');
      assert.ok(t.logprob <= 0);
      assert.deepEqual(t.bytes, [...Buffer.from(t.token, 'utf8')]);
      assert.ok(t.top_logprobs.length <= 2);
    }
    // Thinking off (Qwen3's enable_thinking): the template adds an empty think block.
    const quiet = await client.chat.completions.create({
      ...args, messages, chat_template_kwargs: { enable_thinking: false } });
    const thinkOff = await client.completions.create({
      ...args, prompt: rendered + '<think>\n\n</think>\n\n' });
    assert.equal(quiet.choices[0].message.content, thinkOff.choices[0].text);
    assert.equal(quiet.usage.prompt_tokens, thinkOff.usage.prompt_tokens);
  },

  async chatStreamingNAndStop() {
    const messages = [{ role: 'user', content: 'Tell me a story' }];
    const args = { model, messages, max_tokens: 8, temperature: 0, ignore_eos: true };
    const whole = (await client.chat.completions.create(args)).choices[0].message.content;
    const stream = await client.chat.completions.create({
      ...args, stream: true, stream_options: { include_usage: true } });
    let text = '', role = null, finish = null, usage = null, first = true;
    for await (const chunk of stream) {
      assert.equal(chunk.object, 'chat.completion.chunk');
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        if (first) { role = c.delta.role; first = false; }
        text += c.delta.content || '';
        if (c.finish_reason) finish = c.finish_reason;
      }
    }
    assert.equal(role, 'assistant', 'the first delta carries the role');
    assert.equal(text, whole);
    assert.equal(finish, 'length');
    assert.equal(usage.completion_tokens, 8);
    const two = await client.chat.completions.create({ ...args, n: 2, temperature: 1, seed: 5 });
    assert.equal(two.choices.length, 2);
    assert.deepEqual(two.choices.map((c) => c.index), [0, 1]);
    const again = await client.chat.completions.create({ ...args, n: 2, temperature: 1, seed: 5 });
    assert.deepEqual(again.choices.map((c) => c.message.content),
                     two.choices.map((c) => c.message.content), 'seeded: reproducible');
    const stop = whole.slice(3, 5);
    if (stop.length === 2 && !whole.slice(0, 3).includes(stop)) {
      const s = await client.chat.completions.create({ ...args, stop });
      assert.equal(s.choices[0].finish_reason, 'stop');
      assert.equal(s.choices[0].message.content, whole.slice(0, whole.indexOf(stop)));
    }
  },

  async abortedStreamIsCancelledAndItsCacheFreed() {
    const before = await metric('epserve_requests_total');
    const controller = new AbortController();
    const stream = await client.completions.create(
      { model, prompt: 'Hello', max_tokens: 1500, temperature: 0, ignore_eos: true, stream: true },
      { signal: controller.signal });
    let chunks = 0;
    try {
      for await (const chunk of stream) {
        if (chunk.choices.length && ++chunks === 3) controller.abort();
      }
    } catch (e) {
      // the client's abort
    }
    assert.ok(await waitFor(async () => (await metric('epserve_requests_total')) > before, 10000),
              'the aborted request ended on the router');
    assert.ok(await waitFor(async () => (await metric('epserve_requests_running')) === 0 &&
                                        (await metric('epserve_kv_cache_usage_ratio')) === 0,
                            10000), 'nothing left running, KV back to 0');
  },

  async concurrentClientsEachGetTheirOwnOutput() {
    // 64 HTTP clients (half streaming) while gRPC clients (epserve bench, 32
    // requests) run beside them: every request completes once.
    const { spawn } = require('node:child_process');
    const bench = spawn(process.env.EPSERVE_CLI,
      ['bench', '--server', process.env.EPSERVE_GRPC, '--num-prompts', '32', '--max-concurrency',
       '16', '--input-len', '16', '--output-len', '8'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const benchDone = new Promise((resolve) => bench.on('exit', (code) => resolve(code)));
    let benchOut = '';
    bench.stdout.on('data', (d) => { benchOut += d; });
    const seeds = Array.from({ length: 64 }, (_, i) => i + 10);
    const alone = [];
    for (const seed of seeds.slice(0, 4)) {
      alone.push((await client.completions.create({ model, prompt: 'Hi', max_tokens: 8,
                                                    temperature: 1, seed })).choices[0].text);
    }
    const together = await Promise.all(seeds.map((seed) => client.completions.create(
      { model, prompt: 'Hi', max_tokens: 8, temperature: 1, seed, stream: seed % 2 === 0 })));
    for (let i = 0; i < 4; ++i) {
      let text = '';
      if (seeds[i] % 2 === 0) {
        for await (const chunk of together[i]) for (const c of chunk.choices) text += c.text;
      } else {
        text = together[i].choices[0].text;
      }
      assert.equal(text, alone[i], `seed ${seeds[i]}`);
    }
    for (let i = 4; i < seeds.length; ++i) {
      if (seeds[i] % 2 === 0) {
        let finish = null;
        for await (const chunk of together[i]) {
          for (const c of chunk.choices) if (c.finish_reason) finish = c.finish_reason;
        }
        assert.ok(finish, `stream ${i} finished`);
      } else {
        assert.equal(together[i].choices.length, 1);
      }
    }
    assert.equal(await benchDone, 0, `the gRPC clients beside them: ${benchOut}`);
    assert.match(benchOut, /Successful requests:\s+32/);
  },
};

(async () => {
  let failed = 0;
  for (const [name, test] of Object.entries(tests)) {
    try {
      await test();
      console.log(`ok   ${name}`);
    } catch (e) {
      failed += 1;
      console.log(`FAIL ${name}: ${e.stack || e}`);
    }
  }
  console.log(failed ? `${failed} failed` : 'all passed');
  process.exit(failed ? 1 : 0);
})();
