using KvFetcher.Serving.Chat;

namespace KvFetcher.Serving.Tests;

public sealed class ChatTemplateTests(ServingFixture fixture) : IClassFixture<ServingFixture>
{
    [Fact]
    public void ForModel_BundledModelWithoutTemplate_Plain()
    {
        ChatTemplate template = ChatTemplate.ForModel(fixture.ModelDirectory, fixture.Model.Tokenizer);

        Assert.Same(ChatTemplate.Plain, template);
        Assert.Equal("System: Be brief.\n\nUser: Hi there\n\nAssistant: Hello.\n\nUser: Why?\n\nAssistant:",
            template.Render([new("system", "Be brief."), new("user", " Hi there "), new("assistant", "Hello."), new("user", "Why?")]));
    }

    [Fact]
    public void Recognise_ChatMlWithoutItsTokens_PlainWithReason()
    {
        ChatTemplate template = ChatTemplate.Recognise("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}", fixture.Model.Tokenizer);

        Assert.Equal("plain", template.Name);
        Assert.NotNull(template.Unrecognised);
    }

    [Fact]
    public void Render_ChatMlAndLlama3_ModelFormats()
    {
        ChatTurn[] turns = [new("system", "S"), new("user", "U")];

        Assert.Equal("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n", ChatTemplate.ChatMl.Render(turns));
        Assert.Equal("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|>"
            + "<|start_header_id|>assistant<|end_header_id|>\n\n", ChatTemplate.Llama3.Render(turns));
    }
}
