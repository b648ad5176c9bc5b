namespace Vireo.Cli;

/// <summary>
/// Serial output to the terminal: buffered, written at each newline, when the buffer fills,
/// and by a 20 ms timer so that a prompt without a newline still shows. The timer is armed only
/// while a partial line waits: an idle periodic timer would wake a thread-pool thread 50 times a
/// second, and each wake spins on a core the guest could use.
/// </summary>
internal sealed class SerialConsole : IDisposable
{
    private readonly Stream _output;
    private readonly byte[] _buffer = new byte[4096];
    private readonly Lock _lock = new();
    private readonly Timer _timer;
    private int _length;
    private bool _timerArmed;

    public SerialConsole(Stream output)
    {
        _output = output;
        _timer = new Timer(_ => Flush(), null, Timeout.Infinite, Timeout.Infinite);
    }

    public void Transmit(byte b)
    {
        lock (_lock)
        {
            _buffer[_length++] = b;
            if (b == (byte)'\n' || _length == _buffer.Length)
            {
                FlushLocked();
            }
            else if (!_timerArmed)
            {
                _timerArmed = true;
                _timer.Change(20, Timeout.Infinite);
            }
        }
    }

    public void Flush()
    {
        lock (_lock)
        {
            FlushLocked();
        }
    }

    private void FlushLocked()
    {
        _timerArmed = false;
        if (_length > 0)
        {
            try
            {
                _output.Write(_buffer, 0, _length);
                _output.Flush();
            }
            catch (IOException)
            {
                // The reader went away (a closed pipe): the guest keeps running, its output is dropped.
            }
            _length = 0;
        }
    }

    public void Dispose()
    {
        _timer.Dispose();
        Flush();
    }
}
