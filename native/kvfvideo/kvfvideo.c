/*
 * kvfvideo: the thin C shim between KvFetcher's video codec (C#) and libx265 / libavcodec.
 *
 * It hides the libraries' struct layouts: the managed side only passes plane pointers, sizes and strides.
 * Streams are 8-, 10- or 12-bit 4:4:4 lossless HEVC in Annex B byte-stream format, so NVDEC can decode them too.
 * Planes hold one byte per sample at 8 bits and two (little-endian uint16) at 10 and 12 bits.
 * Every function returns KVF_OK or a negative status; a handle keeps a one-line description of its last failure.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <x265.h>
#include <libavcodec/avcodec.h>
#include <libavutil/error.h>
#include <libavutil/log.h>
#include <libavutil/pixfmt.h>

#define KVF_API __attribute__((visibility("default")))

enum
{
    KVF_OK = 0,
    KVF_EINVAL = -1,   /* an argument is out of range */
    KVF_ENOMEM = -2,   /* an allocation failed */
    KVF_EX265 = -3,    /* a libx265 call failed */
    KVF_EAV = -4,      /* a libavcodec call failed (corrupt stream) */
    KVF_EFRAME = -5,   /* a decoded frame has the wrong size, format or flags */
    KVF_ECOUNT = -6,   /* the stream holds more frames than the caller allows */
};

#define KVF_MIN_SIZE 144
#define KVF_MAX_SIZE 8192

/* The shim's ABI version; the managed side refuses a library with another one. */
KVF_API int kvf_version(void) { return 2; }

/* ---------------------------------------------------------------------------------------------------------- */
/* Encoder                                                                                                    */
/* ---------------------------------------------------------------------------------------------------------- */

typedef struct kvf_encoder
{
    const x265_api *api;
    x265_param *param;
    int depth;
    x265_encoder *encoder;
    int width;
    int height;
    int frames_in;
    int finished;
    uint8_t *out;
    size_t out_size;
    size_t out_capacity;
    char error[256];
} kvf_encoder;

static int enc_fail(kvf_encoder *e, int status, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vsnprintf(e->error, sizeof e->error, format, args);
    va_end(args);
    return status;
}

static int enc_append(kvf_encoder *e, const x265_nal *nals, uint32_t count)
{
    for (uint32_t i = 0; i < count; i++)
    {
        size_t need = e->out_size + nals[i].sizeBytes;
        if (need > e->out_capacity)
        {
            size_t capacity = e->out_capacity ? e->out_capacity : 65536;
            while (capacity < need)
            {
                capacity *= 2;
            }

            uint8_t *grown = realloc(e->out, capacity);
            if (!grown)
            {
                return enc_fail(e, KVF_ENOMEM, "out of memory growing the stream to %zu bytes", capacity);
            }

            e->out = grown;
            e->out_capacity = capacity;
        }

        memcpy(e->out + e->out_size, nals[i].payload, nals[i].sizeBytes);
        e->out_size += nals[i].sizeBytes;
    }

    return KVF_OK;
}

static int enc_param(kvf_encoder *e, const char *name, const char *value)
{
    int rc = e->api->param_parse(e->param, name, value);
    return rc == 0 ? KVF_OK : enc_fail(e, KVF_EX265, "x265_param_parse(%s=%s) returned %d", name, value, rc);
}

KVF_API void kvf_encoder_destroy(kvf_encoder *e)
{
    if (!e)
    {
        return;
    }

    if (e->encoder)
    {
        e->api->encoder_close(e->encoder);
    }

    if (e->param)
    {
        e->api->param_free(e->param);
    }

    free(e->out);
    free(e);
}

KVF_API const char *kvf_encoder_error(const kvf_encoder *e) { return e ? e->error : "null encoder"; }

/*
 * Opens a lossless 4:4:4 HEVC encoder of `depth` bits (8, 10 or 12; libx265's multilib build provides each) for
 * `frames` frames of width x height; one GOP covers the stream.
 * preset: an x265 preset name (ultrafast .. placebo). threads: x265 worker threads (0 = x265's default).
 * On failure *out is still a handle (unless allocation failed) whose error text says what failed.
 */
KVF_API int kvf_encoder_create(int width, int height, int depth, int frames, const char *preset, int threads, kvf_encoder **out)
{
    if (!out)
    {
        return KVF_EINVAL;
    }

    *out = NULL;
    kvf_encoder *e = calloc(1, sizeof *e);
    if (!e)
    {
        return KVF_ENOMEM;
    }

    *out = e;
    if (width < KVF_MIN_SIZE || height < KVF_MIN_SIZE || width > KVF_MAX_SIZE || height > KVF_MAX_SIZE || frames < 1 || !preset || threads < 0)
    {
        return enc_fail(e, KVF_EINVAL, "invalid encoder arguments: %dx%d, %d frames, %d threads", width, height, frames, threads);
    }

    if (depth != 8 && depth != 10 && depth != 12)
    {
        return enc_fail(e, KVF_EINVAL, "invalid bit depth %d (8, 10 or 12)", depth);
    }

    e->api = x265_api_get(depth);
    if (!e->api || e->api->bit_depth != depth)
    {
        e->api = NULL;
        return enc_fail(e, KVF_EX265, "libx265 has no %d-bit encoder (x265_api_get(%d) failed; Debian's libx265 is built with 8, 10 and 12)", depth, depth);
    }

    e->depth = depth;
    e->width = width;
    e->height = height;
    e->param = e->api->param_alloc();
    if (!e->param)
    {
        return enc_fail(e, KVF_ENOMEM, "x265_param_alloc failed");
    }

    if (e->api->param_default_preset(e->param, preset, NULL) != 0)
    {
        return enc_fail(e, KVF_EX265, "x265_param_default_preset(%s) failed", preset);
    }

    char keyint[16];
    char pools[16];
    snprintf(keyint, sizeof keyint, "%d", frames);
    snprintf(pools, sizeof pools, "%d", threads);
    int rc;
    if ((rc = enc_param(e, "log-level", "none")) != KVF_OK || (rc = enc_param(e, "lossless", "1")) != KVF_OK ||
        (rc = enc_param(e, "keyint", keyint)) != KVF_OK || (rc = enc_param(e, "min-keyint", keyint)) != KVF_OK ||
        (rc = enc_param(e, "scenecut", "0")) != KVF_OK || (rc = enc_param(e, "bframes", "0")) != KVF_OK ||
        (rc = enc_param(e, "info", "0")) != KVF_OK || (rc = enc_param(e, "annexb", "1")) != KVF_OK ||
        (rc = enc_param(e, "repeat-headers", "0")) != KVF_OK || (rc = enc_param(e, "hash", "0")) != KVF_OK ||
        (rc = enc_param(e, "frame-threads", "1")) != KVF_OK || (threads > 0 && (rc = enc_param(e, "pools", pools)) != KVF_OK))
    {
        return rc;
    }

    if (e->param->internalBitDepth != depth)
    {
        return enc_fail(e, KVF_EX265, "libx265's %d-bit API encodes %d-bit", depth, e->param->internalBitDepth);
    }

    e->param->internalCsp = X265_CSP_I444;
    e->param->sourceWidth = width;
    e->param->sourceHeight = height;
    e->param->fpsNum = 25;
    e->param->fpsDenom = 1;
    const char *profile = depth == 8 ? "main444-8" : depth == 10 ? "main444-10" : "main444-12";
    if (e->api->param_apply_profile(e->param, profile) != 0)
    {
        return enc_fail(e, KVF_EX265, "x265_param_apply_profile(%s) failed", profile);
    }

    e->encoder = e->api->encoder_open(e->param);
    if (!e->encoder)
    {
        return enc_fail(e, KVF_EX265, "x265_encoder_open failed for %dx%d 4:4:4 %d-bit lossless", width, height, depth);
    }

    x265_nal *nals = NULL;
    uint32_t count = 0;
    rc = e->api->encoder_headers(e->encoder, &nals, &count);
    if (rc < 0)
    {
        return enc_fail(e, KVF_EX265, "x265_encoder_headers returned %d", rc);
    }

    return enc_append(e, nals, count);
}

/* Encodes one frame from three width x height planes (Y, U, V) with the given row stride in bytes. */
KVF_API int kvf_encoder_encode(kvf_encoder *e, const uint8_t *y, const uint8_t *u, const uint8_t *v, int stride)
{
    if (!e || !e->encoder)
    {
        return KVF_EINVAL;
    }

    int sample = e->depth > 8 ? 2 : 1;
    if (e->finished || !y || !u || !v || stride < e->width * sample)
    {
        return enc_fail(e, KVF_EINVAL, "invalid frame: stride %d for width %d, finished %d", stride, e->width, e->finished);
    }

    x265_picture picture;
    e->api->picture_init(e->param, &picture);
    picture.colorSpace = X265_CSP_I444;
    picture.bitDepth = e->depth;
    picture.planes[0] = (void *)y;
    picture.planes[1] = (void *)u;
    picture.planes[2] = (void *)v;
    picture.stride[0] = picture.stride[1] = picture.stride[2] = stride;
    picture.pts = e->frames_in;
    x265_nal *nals = NULL;
    uint32_t count = 0;
    int rc = e->api->encoder_encode(e->encoder, &nals, &count, &picture, NULL);
    if (rc < 0)
    {
        return enc_fail(e, KVF_EX265, "x265_encoder_encode returned %d on frame %d", rc, e->frames_in);
    }

    e->frames_in++;
    return enc_append(e, nals, count);
}

/* Flushes the encoder and returns the whole stream; the bytes stay valid until kvf_encoder_destroy. */
KVF_API int kvf_encoder_finish(kvf_encoder *e, const uint8_t **data, size_t *size)
{
    if (!e || !e->encoder || !data || !size)
    {
        return KVF_EINVAL;
    }

    while (!e->finished)
    {
        x265_nal *nals = NULL;
        uint32_t count = 0;
        int rc = e->api->encoder_encode(e->encoder, &nals, &count, NULL, NULL);
        if (rc < 0)
        {
            return enc_fail(e, KVF_EX265, "x265_encoder_encode (flush) returned %d", rc);
        }

        if ((rc = enc_append(e, nals, count)) != KVF_OK)
        {
            return rc;
        }

        if (count == 0)
        {
            e->finished = 1;
        }
    }

    *data = e->out;
    *size = e->out_size;
    return KVF_OK;
}

/* ---------------------------------------------------------------------------------------------------------- */
/* Decoder                                                                                                    */
/* ---------------------------------------------------------------------------------------------------------- */

typedef struct kvf_decoder
{
    AVCodecContext *context;
    AVCodecParserContext *parser;
    AVPacket *packet;
    AVFrame *frame;
    int width;
    int height;
    int depth;
    char error[256];
} kvf_decoder;

static int dec_fail(kvf_decoder *d, int status, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vsnprintf(d->error, sizeof d->error, format, args);
    va_end(args);
    return status;
}

static int dec_av_fail(kvf_decoder *d, const char *call, int rc)
{
    char text[AV_ERROR_MAX_STRING_SIZE] = {0};
    av_strerror(rc, text, sizeof text);
    return dec_fail(d, KVF_EAV, "%s returned %d (%s)", call, rc, text);
}

KVF_API void kvf_decoder_destroy(kvf_decoder *d)
{
    if (!d)
    {
        return;
    }

    av_frame_free(&d->frame);
    av_packet_free(&d->packet);
    if (d->parser)
    {
        av_parser_close(d->parser);
    }

    avcodec_free_context(&d->context);
    free(d);
}

KVF_API const char *kvf_decoder_error(const kvf_decoder *d) { return d ? d->error : "null decoder"; }

/* Opens a CPU HEVC decoder (libavcodec) that accepts only width x height 4:4:4 frames of `depth` bits (8, 10, 12). */
KVF_API int kvf_decoder_create(int width, int height, int depth, kvf_decoder **out)
{
    if (!out)
    {
        return KVF_EINVAL;
    }

    *out = NULL;
    kvf_decoder *d = calloc(1, sizeof *d);
    if (!d)
    {
        return KVF_ENOMEM;
    }

    *out = d;
    if (width < KVF_MIN_SIZE || height < KVF_MIN_SIZE || width > KVF_MAX_SIZE || height > KVF_MAX_SIZE ||
        (depth != 8 && depth != 10 && depth != 12))
    {
        return dec_fail(d, KVF_EINVAL, "invalid decoder size %dx%d or bit depth %d", width, height, depth);
    }

    av_log_set_level(AV_LOG_QUIET);
    d->depth = depth;
    d->width = width;
    d->height = height;
    const AVCodec *codec = avcodec_find_decoder(AV_CODEC_ID_HEVC);
    if (!codec)
    {
        return dec_fail(d, KVF_EAV, "avcodec_find_decoder(AV_CODEC_ID_HEVC) found no decoder");
    }

    d->context = avcodec_alloc_context3(codec);
    d->parser = av_parser_init(AV_CODEC_ID_HEVC);
    d->packet = av_packet_alloc();
    d->frame = av_frame_alloc();
    if (!d->context || !d->parser || !d->packet || !d->frame)
    {
        return dec_fail(d, KVF_ENOMEM, "allocating the libavcodec context, parser, packet or frame failed");
    }

    d->context->thread_count = 1;
    /* libavcodec checks the coded size (whole 64x64 CTUs), not the cropped one. */
    d->context->max_pixels = (int64_t)(width + 64) * (height + 64);
    d->context->err_recognition = AV_EF_CRCCHECK | AV_EF_BITSTREAM | AV_EF_BUFFER | AV_EF_EXPLODE;
    int rc = avcodec_open2(d->context, codec, NULL);
    return rc < 0 ? dec_av_fail(d, "avcodec_open2", rc) : KVF_OK;
}

/* Copies every frame the decoder has ready into planes (frame f, plane p at (f * 3 + p) * width * height). */
static int dec_receive(kvf_decoder *d, uint8_t *planes, int max_frames, int *frames)
{
    int sample = d->depth > 8 ? 2 : 1;
    int format = d->depth == 8 ? AV_PIX_FMT_YUV444P : d->depth == 10 ? AV_PIX_FMT_YUV444P10LE : AV_PIX_FMT_YUV444P12LE;
    size_t row_bytes = (size_t)d->width * sample;
    size_t plane = row_bytes * d->height;
    for (;;)
    {
        int rc = avcodec_receive_frame(d->context, d->frame);
        if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF)
        {
            return KVF_OK;
        }

        if (rc < 0)
        {
            return dec_av_fail(d, "avcodec_receive_frame", rc);
        }

        AVFrame *f = d->frame;
        if (f->format != format || f->width != d->width || f->height != d->height)
        {
            int status = dec_fail(d, KVF_EFRAME, "frame %d is %dx%d in pixel format %d; expected %dx%d %d-bit 4:4:4 (%d)", *frames, f->width,
                                  f->height, f->format, d->width, d->height, d->depth, format);
            av_frame_unref(f);
            return status;
        }

        if ((f->flags & AV_FRAME_FLAG_CORRUPT) || f->decode_error_flags)
        {
            int status = dec_fail(d, KVF_EFRAME, "frame %d is marked corrupt (decode error flags 0x%x)", *frames, f->decode_error_flags);
            av_frame_unref(f);
            return status;
        }

        if (*frames >= max_frames)
        {
            av_frame_unref(f);
            return dec_fail(d, KVF_ECOUNT, "the stream holds more than the %d frames expected", max_frames);
        }

        for (int p = 0; p < 3; p++)
        {
            uint8_t *dst = planes + ((size_t)*frames * 3 + p) * plane;
            for (int row = 0; row < d->height; row++)
            {
                memcpy(dst + (size_t)row * row_bytes, f->data[p] + (size_t)row * f->linesize[p], row_bytes);
            }
        }

        (*frames)++;
        av_frame_unref(f);
    }
}

static int dec_send(kvf_decoder *d, AVPacket *packet, uint8_t *planes, int max_frames, int *frames)
{
    for (;;)
    {
        int rc = avcodec_send_packet(d->context, packet);
        if (rc == AVERROR(EAGAIN))
        {
            int before = *frames;
            if ((rc = dec_receive(d, planes, max_frames, frames)) != KVF_OK)
            {
                return rc;
            }

            if (*frames == before)
            {
                return dec_fail(d, KVF_EAV, "avcodec_send_packet wants frames read first but none are ready");
            }

            continue;
        }

        if (rc < 0 && !(packet == NULL && rc == AVERROR_EOF))
        {
            return dec_av_fail(d, packet ? "avcodec_send_packet" : "avcodec_send_packet (drain)", rc);
        }

        return dec_receive(d, planes, max_frames, frames);
    }
}

/*
 * Decodes a whole Annex B stream (a decoder decodes one stream) into planes, which holds max_frames frames of
 * three width x height planes of 1 (8-bit) or 2 (10/12-bit) bytes per sample; *frames receives the number decoded. A stream with other frame sizes, formats,
 * more frames, or any error libavcodec reports fails with a description in kvf_decoder_error.
 */
KVF_API int kvf_decoder_decode(kvf_decoder *d, const uint8_t *data, size_t size, uint8_t *planes, size_t planes_size, int max_frames,
                               int *frames)
{
    if (!d || !d->context)
    {
        return KVF_EINVAL;
    }

    if (!data || !planes || !frames || max_frames < 1 || planes_size / 3 / ((size_t)d->width * d->height * (d->depth > 8 ? 2 : 1)) < (size_t)max_frames)
    {
        return dec_fail(d, KVF_EINVAL, "invalid decode arguments: %zu plane bytes for %d frames", planes_size, max_frames);
    }

    *frames = 0;
    /* The parser may read up to AV_INPUT_BUFFER_PADDING_SIZE bytes past the end, which must be zero. */
    uint8_t *padded = malloc(size + AV_INPUT_BUFFER_PADDING_SIZE);
    if (!padded)
    {
        return dec_fail(d, KVF_ENOMEM, "out of memory copying a %zu-byte stream", size);
    }

    memcpy(padded, data, size);
    memset(padded + size, 0, AV_INPUT_BUFFER_PADDING_SIZE);
    int rc = KVF_OK;
    size_t position = 0;
    for (;;)
    {
        int remaining = (int)(size - position);
        uint8_t *out_data = NULL;
        int out_size = 0;
        int used = av_parser_parse2(d->parser, d->context, &out_data, &out_size, padded + position, remaining, AV_NOPTS_VALUE,
                                    AV_NOPTS_VALUE, 0);
        if (used < 0 || used > remaining)
        {
            rc = dec_fail(d, KVF_EAV, "av_parser_parse2 returned %d at offset %zu", used, position);
            break;
        }

        position += (size_t)used;
        if (out_size > 0)
        {
            d->packet->data = out_data;
            d->packet->size = out_size;
            rc = dec_send(d, d->packet, planes, max_frames, frames);
            d->packet->data = NULL;
            d->packet->size = 0;
            if (rc != KVF_OK)
            {
                break;
            }
        }

        if (remaining == 0 && out_size == 0)
        {
            break; /* the parser is flushed */
        }

        if (used == 0 && out_size == 0 && remaining > 0)
        {
            rc = dec_fail(d, KVF_EAV, "av_parser_parse2 made no progress at offset %zu", position);
            break;
        }
    }

    if (rc == KVF_OK)
    {
        rc = dec_send(d, NULL, planes, max_frames, frames);
    }

    free(padded);
    return rc;
}
