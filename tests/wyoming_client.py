"""Drives a Wyoming server with the Python `wyoming` package (the library
Home Assistant's Wyoming integration uses), for tests/wyoming.rs.

    python wyoming_client.py URI describe
    python wyoming_client.py URI transcribe IN.wav
    python wyoming_client.py URI synthesize TEXT OUT.wav [VOICE]
    python wyoming_client.py URI satellite HEARD.wav TRANSCRIPT ANSWER ANSWER.wav
    python wyoming_client.py URI wait-pipeline

`satellite` plays Home Assistant's part: it runs the satellite, saves the
utterance the satellite sends, answers with TRANSCRIPT, ANSWER and
ANSWER.wav's audio, and waits for `played`. It prints "running" as soon
as the satellite runs.

Prints one JSON object: the info, the transcript, or what came back."""

import asyncio
import json
import sys
import wave

from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop, wav_to_chunks
from wyoming.client import AsyncClient
from wyoming.error import Error
from wyoming.info import Describe, Info
from wyoming.pipeline import RunPipeline
from wyoming.satellite import RunSatellite
from wyoming.snd import Played
from wyoming.tts import Synthesize, SynthesizeVoice


async def describe(client):
    await client.write_event(Describe().event())
    while True:
        event = await client.read_event()
        if Info.is_type(event.type):
            return Info.from_event(event).to_dict()


async def transcribe(client, path):
    await client.write_event(Transcribe(language="en").event())
    with wave.open(path, "rb") as wav:
        for message in wav_to_chunks(wav, 1024, start_event=True, stop_event=True):
            await client.write_event(message.event())
    while True:
        event = await client.read_event()
        if Transcript.is_type(event.type):
            return {"text": Transcript.from_event(event).text}
        if Error.is_type(event.type):
            return {"error": Error.from_event(event).text}


async def synthesize(client, text, path, voice):
    voice = SynthesizeVoice(name=voice) if voice else None
    await client.write_event(Synthesize(text=text, voice=voice).event())
    out, chunks = None, 0
    while True:
        event = await client.read_event()
        if AudioStart.is_type(event.type):
            start = AudioStart.from_event(event)
            out = wave.open(path, "wb")
            out.setframerate(start.rate)
            out.setsampwidth(start.width)
            out.setnchannels(start.channels)
        elif AudioChunk.is_type(event.type):
            out.writeframes(AudioChunk.from_event(event).audio)
            chunks += 1
        elif AudioStop.is_type(event.type):
            out.close()
            return {"chunks": chunks}
        elif Error.is_type(event.type):
            return {"error": Error.from_event(event).text}


async def satellite(client, heard_path, transcript, answer, answer_path):
    info = await describe(client)
    await client.write_event(RunSatellite().event())
    print("running", flush=True)
    pipeline, heard = None, None
    while True:
        event = await client.read_event()
        if RunPipeline.is_type(event.type):
            run = RunPipeline.from_event(event)
            pipeline = {"start_stage": run.start_stage.value, "end_stage": run.end_stage.value}
        elif AudioStart.is_type(event.type):
            start = AudioStart.from_event(event)
            heard = wave.open(heard_path, "wb")
            heard.setframerate(start.rate)
            heard.setsampwidth(start.width)
            heard.setnchannels(start.channels)
        elif AudioChunk.is_type(event.type) and heard:
            heard.writeframes(AudioChunk.from_event(event).audio)
        elif AudioStop.is_type(event.type) and heard:
            heard.close()
            break
    await client.write_event(Transcript(text=transcript).event())
    await client.write_event(Synthesize(text=answer).event())
    with wave.open(answer_path, "rb") as wav:
        for message in wav_to_chunks(wav, 1024, start_event=True, stop_event=True):
            await client.write_event(message.event())
    while True:
        event = await client.read_event()
        if Played.is_type(event.type):
            break
    return {"satellite": info.get("satellite"), "pipeline": pipeline, "played": True}


async def wait_pipeline(uri):
    import time
    for _ in range(100):
        try:
            client = AsyncClient.from_uri(uri)
            await client.connect()
            break
        except OSError:
            await asyncio.sleep(0.2)
    await client.write_event(RunSatellite().event())
    started = time.monotonic()
    while True:
        event = await client.read_event()
        if RunPipeline.is_type(event.type):
            run = RunPipeline.from_event(event)
            return {
                "pipeline": {"start_stage": run.start_stage.value, "end_stage": run.end_stage.value},
                "after_s": time.monotonic() - started,
            }


async def main(uri, command, *args):
    if command == "wait-pipeline":
        print(json.dumps(await wait_pipeline(uri)))
        return
    async with AsyncClient.from_uri(uri) as client:
        if command == "describe":
            result = await describe(client)
        elif command == "transcribe":
            result = await transcribe(client, *args)
        elif command == "satellite":
            result = await satellite(client, *args)
        else:
            text, path, *voice = args
            result = await synthesize(client, text, path, voice[0] if voice else None)
    print(json.dumps(result))


asyncio.run(asyncio.wait_for(main(*sys.argv[1:]), timeout=120))
