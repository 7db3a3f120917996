use super::*;
use serde_json::json;

fn render(src: &str, messages: &[ChatMessage]) -> Result<String, TemplateError> {
    ChatTemplate::new(src, "<s>", "</s>")?.render(messages, None, false)
}

#[test]
fn python_semantics() {
    let msgs = [ChatMessage::system(" Be brief. "), ChatMessage::user("Hi there")];
    let src = "{% for m in messages %}{{ m.role.upper() }}:{{ m.content.strip() }}|{{ m['content'].split()|length }}{% if not loop.last %}\n{% endif %}{% endfor %}";
    // trim_blocks eats the newline right after a block tag, as Jinja2 does
    assert_eq!(render(src, &msgs).unwrap(), "SYSTEM:Be brief.|2USER:Hi there|2");
    // trim_blocks + lstrip_blocks: block lines leave no whitespace behind
    let src = "  {% if true %}\nA\n  {% endif %}\nB";
    assert_eq!(render(src, &[]).unwrap(), "A\nB");
    // values print as Python's str()
    let src = "{{ none }} {{ true }} {{ [1, 'a'] }} {{ {'k': none} }} {{ 1.0 }}";
    assert_eq!(render(src, &[]).unwrap(), "None True [1, 'a'] {'k': None} 1.0");
    // loop controls, namespace, slicing, dict methods
    let src = "{% set ns = namespace(n=0) %}{% for m in messages[1:] %}{% if m.role == 'user' %}{% continue %}{% endif %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}{% for k, v in {'a': 1}.items() %}{{ k }}={{ v }}{% endfor %}";
    let msgs = [ChatMessage::system("s"), ChatMessage::user("u"), ChatMessage::assistant("a")];
    assert_eq!(render(src, &msgs).unwrap(), "1a=1");
    // bos/eos and add_generation_prompt
    let t =
        ChatTemplate::new("{{ bos_token }}{% if add_generation_prompt %}GO{% endif %}{{ eos_token }}", "<s>", "</s>")
            .unwrap();
    assert_eq!(t.render(&[], None, true).unwrap(), "<s>GO</s>");
    assert_eq!(t.render(&[], None, false).unwrap(), "<s></s>");
}

#[test]
fn tojson_matches_python_json_dumps() {
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "description": "Weather in <city> — it's \"fun\" & free\n", "parameters": {"type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1.5}}, "required": ["city"]}}}]);
    let t = ChatTemplate::new("{{ tools | tojson }}|{{ tools[0] | tojson(indent=2) }}|{{ {'b': 1, 'a': [true, none]} | tojson(sort_keys=true) }}|{{ 'é' | tojson(ensure_ascii=true) }}|{{ [1,2] | tojson(separators=(',', ':')) }}", "", "").unwrap();
    let out = t.render(&[], Some(&tools), false).unwrap();
    let parts: Vec<&str> = out.split('|').collect();
    assert_eq!(
        parts[0],
        r#"[{"type": "function", "function": {"name": "get_weather", "description": "Weather in <city> — it's \"fun\" & free\n", "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1.5}}, "required": ["city"]}}}]"#
    );
    assert!(
        parts[1].starts_with("{\n  \"type\": \"function\",\n  \"function\": {\n    \"name\": \"get_weather\","),
        "{}",
        parts[1]
    );
    assert_eq!(parts[2], r#"{"a": [true, null], "b": 1}"#);
    assert_eq!(parts[3], r#""\u00e9""#);
    assert_eq!(parts[4], "[1,2]");
}

#[test]
fn tool_calls_reach_the_template_as_objects() {
    let call =
        json!([{"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{\"a\": 1, \"b\": 2}"}}]);
    let msgs = [
        ChatMessage::user("1+2?"),
        ChatMessage { role: "assistant".into(), content: String::new(), tool_calls: Some(call), ..Default::default() },
        ChatMessage::tool("3", Some("c1".into()), Some("add".into())),
    ];
    let src = "{% for m in messages %}{{ m.role }}:{{ m.content }}{% if m.tool_calls %}{% for c in m.tool_calls %}[{{ c.function.name }} {{ c.function.arguments | tojson }} {{ c.function.arguments.b }}]{% endfor %}{% endif %}{% if m.tool_call_id is defined %}<{{ m.tool_call_id }}/{{ m.name }}>{% endif %};{% endfor %}";
    assert_eq!(render(src, &msgs).unwrap(), r#"user:1+2?;assistant:[add {"a": 1, "b": 2} 2];tool:3<c1/add>;"#);
}

#[test]
fn raise_exception_and_errors() {
    let err = render("{{ raise_exception('roles must alternate') }}", &[]).unwrap_err();
    assert!(matches!(err, TemplateError::Render(ref m) if m.starts_with("roles must alternate")), "{err:?}");
    let err = ChatTemplate::new("{% for x in %}", "", "").unwrap_err();
    assert!(matches!(err, TemplateError::Syntax(_)), "{err:?}");
    let err = render("{{ messages[0].content.nosuchmethod() }}", &[ChatMessage::user("x")]).unwrap_err();
    assert!(matches!(err, TemplateError::Render(_)), "{err:?}");
}

#[test]
fn sandboxed_and_bounded() {
    // no loader: includes cannot read files
    let err = render("{% include '/etc/passwd' %}", &[]).unwrap_err();
    assert!(matches!(err, TemplateError::Render(_)), "{err:?}");
    // an endless-looking loop runs out of fuel instead of running for hours
    let err = render("{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}", &[])
        .unwrap_err();
    assert!(matches!(err, TemplateError::Render(_) | TemplateError::OutputTooLarge { .. }), "{err:?}");
    // output cap
    let t = ChatTemplate::new("{% for i in range(1000) %}{{ 'x' * 100 }}{% endfor %}", "", "")
        .unwrap()
        .with_limits(RenderLimits { max_output_bytes: 10_000, fuel: 10_000_000, max_recursion: 200 })
        .unwrap();
    assert_eq!(t.render(&[], None, false).unwrap_err(), TemplateError::OutputTooLarge { limit: 10_000 });
}

#[test]
fn strftime_now_and_generation_blocks() {
    let out = render("{{ strftime_now('%Y') }}", &[]).unwrap();
    assert!(out.len() == 4 && out.starts_with('2'), "{out}");
    let src = "{%- for m in messages -%}{%- if m.role == 'assistant' -%}{% generation %}[{{ m.content }}]{% endgeneration %}{%- else -%}{{ m.content }}{%- endif -%}{%- endfor -%}";
    assert_eq!(render(src, &[ChatMessage::user("q"), ChatMessage::assistant("a")]).unwrap(), "q[a]");
    assert_eq!(accept_generation_blocks("{%- generation -%}x{%+ endgeneration %}"), "{%- if true -%}x{%+ endif %}");
    // Found by fuzzing: an opening and a closing delimiter that overlap panicked here.
    assert_eq!(accept_generation_blocks("{%} generation %}"), "{%} generation %}");
    assert!(ChatTemplate::new("{%}\n{% generation %}x{% endgeneration %}", "", "").is_err());
}

#[test]
fn builtin_templates() {
    let msgs =
        [ChatMessage::system("Sys"), ChatMessage::user(" Hi "), ChatMessage::assistant("Yo"), ChatMessage::user("Q")];
    let t = ChatTemplate::with_origin(GEMMA_TEMPLATE, "<bos>", "<eos>", TemplateOrigin::Builtin).unwrap();
    assert_eq!(
        t.render(&msgs, None, true).unwrap(),
        "<bos><start_of_turn>user\nSys\n\nHi<end_of_turn>\n<start_of_turn>model\nYo<end_of_turn>\n<start_of_turn>user\nQ<end_of_turn>\n<start_of_turn>model\n"
    );
    let err = t.render(&[ChatMessage::assistant("first")], None, false).unwrap_err();
    assert!(matches!(err, TemplateError::Render(ref m) if m.contains("alternate")), "{err:?}");
    let t = ChatTemplate::with_origin(CHATML_TEMPLATE, "", "", TemplateOrigin::Fallback).unwrap();
    assert_eq!(
        t.render(&msgs[..2], None, true).unwrap(),
        "<|im_start|>system\nSys<|im_end|>\n<|im_start|>user\n Hi <|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(builtin_template_for_architecture("gemma3"), Some(GEMMA_TEMPLATE));
    assert_eq!(builtin_template_for_architecture("llama"), None);
}

#[test]
fn python_internals_are_refused_at_compile_time() {
    for src in [
        "{{ ''.__class__ }}",
        "{{ x['__globals__'] }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ x|attr('__class__') }}",
        "line1\n{{ a.__subclasses__() }}",
    ] {
        let err = ChatTemplate::new(src, "", "").unwrap_err();
        assert!(matches!(err, TemplateError::Unsafe(ref m) if m.contains("Python internal")), "{src}: {err:?}");
    }
    let err = ChatTemplate::new("a\nb\n{{ x.__mro__ }}", "", "").unwrap_err();
    assert!(err.to_string().contains("`__mro__` (line 3)"), "{err}");
    // Identifiers with underscores are fine.
    for src in ["{{ __ }}", "{{ a__b__c }}", "{{ x._private_ }}", "{{ ____ }}", "{% set my__var = 1 %}{{ my__var }}"] {
        ChatTemplate::new(src, "", "").unwrap_or_else(|e| panic!("{src}: {e}"));
    }
}
