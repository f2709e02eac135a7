using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using KvFetcher.Cuda.Native;

namespace KvFetcher.Cuda.Gpu;

/// <summary>
/// CUDA C++ compiled by NVRTC for the context's device (a cubin for its exact architecture, or PTX for the driver
/// to finish when NVRTC does not know the architecture) and loaded as a module.
/// </summary>
internal sealed unsafe class KernelModule : IDisposable
{
    private readonly CudaContext _context;
    private readonly SafeCudaModuleHandle _module;

    private KernelModule(CudaContext context, SafeCudaModuleHandle module)
    {
        _context = context;
        _module = module;
    }

    /// <summary>The engine's kernels: Gpu/Kernels/Kernels.cu and the parts it includes, embedded in the assembly.</summary>
    public static KernelSource EngineSource { get; } = KernelSource.Embedded(typeof(KernelModule).Assembly, "KvFetcher.Cuda.Kernels.", "Kernels.cu");

    /// <summary>Compiles <paramref name="source"/> with <paramref name="defines"/> (NAME=VALUE) and loads it.</summary>
    /// <exception cref="CudaException">Compilation failed (the message holds NVRTC's log) or the module did not load.</exception>
    public static KernelModule Compile(CudaContext context, KernelSource source, IEnumerable<string> defines)
    {
        byte[] image = CompileImage(source, context.ComputeCapability, defines);
        context.MakeCurrent();
        return new KernelModule(context, SafeCudaModuleHandle.Load(context.Handle, image));
    }

    /// <summary>
    /// Compiles <paramref name="source"/> for a device of <paramref name="computeCapability"/>: a cubin, or PTX when
    /// this NVRTC does not know the architecture. Needs NVRTC only, no device.
    /// </summary>
    public static byte[] CompileImage(KernelSource source, Version computeCapability, IEnumerable<string> defines)
    {
        NativeLibraries.Require(NativeLibraries.Nvrtc);
        List<string> common = ["--std=c++17", "-default-device", .. defines.Select(d => "-D" + d)];
        int arch = (computeCapability.Major * 10) + computeCapability.Minor;
        try
        {
            return Build(source, [$"--gpu-architecture=sm_{arch}", .. common], cubin: true);
        }
        catch (CudaException e) when (e.Library == "NVRTC" && e.Status == 5)
        {
            // NVRTC_ERROR_INVALID_OPTION: an architecture newer than this NVRTC; the driver JIT-compiles PTX.
            return Build(source, [$"--gpu-architecture=compute_{Math.Min(arch, 90)}", .. common], cubin: false);
        }
    }

    /// <summary>Whether NVRTC can be loaded here (it compiles without a device).</summary>
    public static bool IsCompilerAvailable(out string reason)
    {
        bool available = NativeLibraries.TryLoad(NativeLibraries.Nvrtc, out string? problem);
        reason = problem ?? "";
        return available;
    }

    /// <summary>Looks up an <c>extern "C"</c> kernel.</summary>
    public CudaKernel Get(string kernelName)
    {
        _context.MakeCurrent();
        IntPtr function;
        byte[] utf8 = Encoding.UTF8.GetBytes(kernelName + "\0");
        fixed (byte* p = utf8)
        {
            Check.Cuda(Interop.Cuda.cuModuleGetFunction(&function, _module.DangerousGetHandle(), p));
        }

        return new CudaKernel(kernelName, function);
    }

    public void Dispose() => _module.Dispose();

    private static byte[] Build(KernelSource source, List<string> options, bool cubin)
    {
        IntPtr program = CreateProgram(source);
        string name = source.Name;

        try
        {
            byte[][] optionBytes = [.. options.Select(o => Encoding.UTF8.GetBytes(o + "\0"))];
            var handles = new GCHandle[optionBytes.Length];
            byte** pointers = stackalloc byte*[optionBytes.Length];
            NvrtcResult compiled;
            try
            {
                for (int i = 0; i < optionBytes.Length; i++)
                {
                    handles[i] = GCHandle.Alloc(optionBytes[i], GCHandleType.Pinned);
                    pointers[i] = (byte*)handles[i].AddrOfPinnedObject();
                }

                compiled = Interop.Nvrtc.nvrtcCompileProgram(program, optionBytes.Length, pointers);
            }
            finally
            {
                foreach (GCHandle handle in handles)
                {
                    if (handle.IsAllocated)
                    {
                        handle.Free();
                    }
                }
            }

            Check.Nvrtc(compiled, $"nvrtcCompileProgram({name}, {string.Join(' ', options)})", ReadLog(program));
            nuint size;
            if (cubin)
            {
                Check.Nvrtc(Interop.Nvrtc.nvrtcGetCUBINSize(program, &size));
                byte[] image = new byte[size];
                fixed (byte* p = image)
                {
                    Check.Nvrtc(Interop.Nvrtc.nvrtcGetCUBIN(program, p));
                }

                return image;
            }

            Check.Nvrtc(Interop.Nvrtc.nvrtcGetPTXSize(program, &size));
            byte[] ptx = new byte[size];
            fixed (byte* p = ptx)
            {
                Check.Nvrtc(Interop.Nvrtc.nvrtcGetPTX(program, p));
            }

            return ptx;
        }
        finally
        {
            _ = Interop.Nvrtc.nvrtcDestroyProgram(&program);
        }
    }

    private static IntPtr CreateProgram(KernelSource source)
    {
        // NVRTC copies the texts: the pins only need to last for the call.
        byte[][] texts = [Encoding.UTF8.GetBytes(source.Text + "\0"), Encoding.UTF8.GetBytes(source.Name + "\0"),
            .. source.Headers.SelectMany(h => new[] { Encoding.UTF8.GetBytes(h.Text + "\0"), Encoding.UTF8.GetBytes(h.Name + "\0") })];
        var handles = new GCHandle[texts.Length];
        int headers = source.Headers.Count;
        byte** headerTexts = stackalloc byte*[Math.Max(headers, 1)];
        byte** headerNames = stackalloc byte*[Math.Max(headers, 1)];
        try
        {
            for (int i = 0; i < texts.Length; i++)
            {
                handles[i] = GCHandle.Alloc(texts[i], GCHandleType.Pinned);
            }

            for (int h = 0; h < headers; h++)
            {
                headerTexts[h] = (byte*)handles[2 + (2 * h)].AddrOfPinnedObject();
                headerNames[h] = (byte*)handles[3 + (2 * h)].AddrOfPinnedObject();
            }

            IntPtr program;
            Check.Nvrtc(Interop.Nvrtc.nvrtcCreateProgram(
                &program, (byte*)handles[0].AddrOfPinnedObject(), (byte*)handles[1].AddrOfPinnedObject(),
                headers, headers > 0 ? headerTexts : null, headers > 0 ? headerNames : null));
            return program;
        }
        finally
        {
            foreach (GCHandle handle in handles)
            {
                if (handle.IsAllocated)
                {
                    handle.Free();
                }
            }
        }
    }

    private static string ReadLog(IntPtr program)
    {
        nuint size;
        if (Interop.Nvrtc.nvrtcGetProgramLogSize(program, &size) != NvrtcResult.Success || size <= 1)
        {
            return "";
        }

        byte[] log = new byte[size];
        fixed (byte* p = log)
        {
            return Interop.Nvrtc.nvrtcGetProgramLog(program, p) == NvrtcResult.Success
                ? Encoding.UTF8.GetString(log, 0, (int)size - 1)
                : "";
        }
    }
}

/// <summary>Arguments of a kernel launch, each in an 8-byte slot (pointers, ints, floats), in declaration order.</summary>
[InlineArray(Capacity)]
internal struct KernelArgumentSlots
{
    public const int Capacity = 16;

    private ulong _element0;
}

/// <summary>A kernel's argument list, built on the stack.</summary>
internal struct KernelArguments
{
    private KernelArgumentSlots _slots;

    public int Count { get; private set; }

    public void Add(ulong devicePointer) => _slots[Count++] = devicePointer;

    public void Add(int value) => _slots[Count++] = (uint)value;

    public void Add(float value) => _slots[Count++] = BitConverter.SingleToUInt32Bits(value);

    [UnscopedRef]
    public Span<ulong> Slots => _slots;
}

/// <summary>An <c>extern "C"</c> kernel of a loaded <see cref="KernelModule"/>.</summary>
internal readonly unsafe struct CudaKernel
{
    private readonly IntPtr _function;

    public CudaKernel(string name, IntPtr function)
    {
        Name = name;
        _function = function;
    }

    public string Name { get; }

    /// <summary>Lets the kernel use up to <paramref name="bytes"/> of dynamic shared memory (above 48 KiB needs this).</summary>
    public void SetMaxDynamicSharedMemory(int bytes) =>
        Check.Cuda(Interop.Cuda.cuFuncSetAttribute(_function, Interop.Cuda.FunctionAttributeMaxDynamicSharedSizeBytes, bytes));

    /// <summary>Queues the kernel on <paramref name="stream"/>.</summary>
    public void Launch(CudaStream stream, (int X, int Y, int Z) grid, int block, int sharedMemoryBytes, ref KernelArguments arguments)
    {
        int count = arguments.Count;
        void** pointers = stackalloc void*[count];
        fixed (ulong* values = arguments.Slots)
        {
            for (int i = 0; i < count; i++)
            {
                pointers[i] = values + i;
            }

            Check.Cuda(Interop.Cuda.cuLaunchKernel(
                _function, (uint)grid.X, (uint)grid.Y, (uint)grid.Z, (uint)block, 1, 1, (uint)sharedMemoryBytes, stream.Handle, pointers, null));
        }
    }
}
