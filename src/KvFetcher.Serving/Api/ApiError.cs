using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace KvFetcher.Serving.Api;

/// <summary>An OpenAI-style error: status, message, type, the offending parameter and a code.</summary>
internal sealed record ApiError(int Status, string Message, string Type = "invalid_request_error", string? Param = null, string? Code = null)
{
    public static ApiError Invalid(string message, string? param = null, string? code = null) => new(StatusCodes.Status400BadRequest, message, Param: param, Code: code);

    /// <summary>
    /// Writes the error as <c>{"error": {...}}</c>; when the response has already begun (a stream), an error event
    /// follows instead, and the stream ends.
    /// </summary>
    public async Task WriteAsync(HttpContext context)
    {
        var body = new ErrorResponse(new ErrorBody(Message, Type, Param, Code));
        HttpResponse response = context.Response;
        if (response.HasStarted)
        {
            byte[] json = JsonSerializer.SerializeToUtf8Bytes(body, OpenAiJson.Default.ErrorResponse);
            await response.Body.WriteAsync("data: "u8.ToArray(), context.RequestAborted);
            await response.Body.WriteAsync(json, context.RequestAborted);
            await response.Body.WriteAsync("\n\n"u8.ToArray(), context.RequestAborted);
            return;
        }

        response.StatusCode = Status;
        response.ContentType = "application/json";
        await JsonSerializer.SerializeAsync(response.Body, body, OpenAiJson.Default.ErrorResponse, context.RequestAborted);
    }
}
